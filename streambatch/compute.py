"""Ray Data's ``compute=`` strategies, for code written against them: an actor pool of a
fixed or autoscaling size, or tasks. Each becomes the ``concurrency`` it stands for.

>>> ActorPoolStrategy(size=2).concurrency, ActorPoolStrategy(min_size=1, max_size=4).concurrency
((2, 2), (1, 4))
>>> resolved_concurrency(TaskPoolStrategy(size=3), None)
(3, 3)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActorPoolStrategy:
    """A pool of ``size`` actors, or between ``min_size`` and ``max_size``."""

    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (self.min_size is not None or self.max_size is not None):
            raise ValueError("ActorPoolStrategy: pass size, or min_size and max_size, not both")
        for name in ("size", "min_size", "max_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"ActorPoolStrategy: {name} must be a positive int, got {value!r}")
        if self.min_size and self.max_size and self.min_size > self.max_size:
            raise ValueError(f"ActorPoolStrategy: min_size {self.min_size} > max_size {self.max_size}")

    @property
    def concurrency(self) -> tuple[int, int] | None:
        """The ``concurrency`` this pool stands for (None: the engine's default)."""
        if self.size is not None:
            return (self.size, self.size)
        if self.min_size is None and self.max_size is None:
            return None
        low = self.min_size or 1
        return (low, self.max_size or max(low, 1 << 16))


@dataclass(frozen=True)
class TaskPoolStrategy:
    """Tasks, at most ``size`` at once (None: as many as the CPUs allow)."""

    size: int | None = None

    @property
    def concurrency(self) -> tuple[int, int] | None:
        """The ``concurrency`` this strategy stands for."""
        return None if self.size is None else (self.size, self.size)


def resolved_concurrency(compute, concurrency):
    """``concurrency``, or what ``compute`` stands for (not both).

    >>> resolved_concurrency("actors", None)
    Traceback (most recent call last):
    ...
    ValueError: compute must be an ActorPoolStrategy or TaskPoolStrategy (or "tasks"), got 'actors'; or pass concurrency=
    """
    if compute is None or compute == "tasks":
        return concurrency
    if not isinstance(compute, (ActorPoolStrategy, TaskPoolStrategy)):
        raise ValueError("compute must be an ActorPoolStrategy or TaskPoolStrategy (or "
                         f"\"tasks\"), got {compute!r}; or pass concurrency=")
    if concurrency is not None:
        raise ValueError("pass compute= or concurrency=, not both")
    return compute.concurrency
