"""Which source partitions are fully processed ("settled"), for exactly-once sinks and resume
(the executor tells its :class:`~streambatch.executor.contract.OutputListener`).

Every partition and running task descending from a read task holds a token for
it. When a read task has finished and no token is left, everything it fed has
reached the output: the read is settled and a resumed job may skip it.
"""

from __future__ import annotations

from collections import Counter


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
