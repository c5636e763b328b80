"""Admission policy: may a stage start another task now, given memory and slots?

Kept separate from the executor loop so policies can be swapped and tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MemoryView:
    """What the policy sees: bytes buffered, the budget, and whether anything runs."""

    used_bytes: int
    budget_bytes: int
    anything_running: bool


class BudgetAdmission:
    """Admit a task when its expected net memory growth fits in the budget.

    A source task adds its whole estimated output; a non-source task adds its
    estimated output minus the input it frees. When nothing runs at all, one
    task is always admitted (liveness), so a tight budget slows a job down but
    never deadlocks it.

    >>> policy = BudgetAdmission()
    >>> policy.admit(MemoryView(90, 100, True), growth_bytes=20)
    False
    >>> policy.admit(MemoryView(90, 100, False), growth_bytes=20)
    True
    >>> policy.admit(MemoryView(50, 100, True), growth_bytes=20)
    True
    """

    def admit(self, view: MemoryView, growth_bytes: int) -> bool:
        """True when a task expected to add ``growth_bytes`` may start."""
        if not view.anything_running:
            return True
        return view.used_bytes + max(0, growth_bytes) <= view.budget_bytes
