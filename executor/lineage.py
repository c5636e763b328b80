"""Which source partitions are fully processed ("settled"), for exactly-once sinks and resume.

Every partition and running task descending from a read task holds a token for
it. When a read task has finished and no token is left, everything it fed has
reached the output: the read is settled and a resumed job may skip it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class LineageListener:
    """Told about final outputs, dead letters and settled reads (a sink's manifest listens).

    Origins are ``(source ordinal, read index)`` pairs of this run; ``identify``
    (given by :meth:`attach` before the run) names one by what it reads, as
    ``[[source ordinal, item, start, stop], ...]``, which holds across runs of
    other layouts.

    >>> LineageListener().on_settled((0, 3))
    """

    def attach(self, identify: Callable[[tuple[int, int]], list]) -> None:
        """Told how to name an origin by what it reads (called once, before the run)."""

    def on_dead_letters(self, rows: list[dict], origins: frozenset) -> None:
        """Rows that a task with these origins sent to the dead letters (``on_error="skip"``)."""

    def on_final_output(self, part, origins: frozenset) -> None:
        """A final-stage partition was produced from these (source, read) origins."""

    def on_settled(self, origin: tuple[int, int]) -> None:
        """Everything descending from read ``origin`` reached the output."""


class OriginTracker:
    """Counts live tokens per origin ``(source ordinal, read index)``.

    >>> t = OriginTracker()
    >>> t.add({(0, 1)})
    >>> t.read_done((0, 1))
    []
    >>> t.remove({(0, 1)})
    [(0, 1)]
    """

    def __init__(self) -> None:
        self.live: Counter = Counter()
        self.reads_done: set = set()
        self.settled: set = set()

    def add(self, origins) -> None:
        """A partition or task descending from ``origins`` exists."""
        for origin in origins:
            self.live[origin] += 1

    def remove(self, origins) -> list:
        """One no longer exists; return the origins that became settled."""
        for origin in origins:
            self.live[origin] -= 1
        return self._newly_settled(origins)

    def read_done(self, origin) -> list:
        """The read task finished (it will produce nothing more)."""
        self.reads_done.add(origin)
        return self._newly_settled([origin])

    def _newly_settled(self, origins) -> list:
        out = []
        for origin in origins:
            if origin in self.reads_done and self.live[origin] <= 0 and origin not in self.settled:
                self.settled.add(origin)
                out.append(origin)
        return sorted(out)
