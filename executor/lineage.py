"""Which source partitions are fully processed ("settled"), for exactly-once sinks and resume
(the executor tells its :class:`~streambatch.executor.contract.OutputListener`), and the
deterministic keys that name a task's output across attempts and runs.

Every partition and running task descending from a read task holds a token for
it. When a read task has finished and no token is left, everything it fed has
reached the output: the read is settled and a resumed job may skip it.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from streambatch.executor.partition import Partition
from streambatch.executor.stage_state import StageState


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


def task_lineage(st: StageState, ordinal: int | None, read_index,
                 inputs: list[Partition]) -> tuple[str, frozenset]:
    """A task's deterministic key and the (source, read) origins it descends from."""
    if st.stage.is_source:
        read_task = st.task_stage.resolved_read_tasks()[read_index]
        key = read_key(ordinal, read_task) or f"s{ordinal}r{read_index}"
        return key, frozenset({(ordinal, read_index)})
    key = inputs[0].key + (f"b{len(inputs)}" if len(inputs) > 1 else "")
    return f"{key}t{st.index}", frozenset().union(*(p.origins for p in inputs))


def read_key(ordinal: int | None, read_task) -> str | None:
    """A read task's lineage key, from what it reads (its pieces), not from its place in
    this run's layout: the same rows give the same key (and sink file name) however
    the source was split. None for a task that names no pieces.

    >>> from streambatch.connectors.datasource import Piece, ReadTask
    >>> read_key(0, ReadTask(lambda: [], pieces=(Piece("range", 0, 10),)))
    's0-85591472498f'
    """
    pieces = getattr(read_task, "pieces", None)
    if not pieces:
        return None
    text = ";".join(f"{p.item}|{p.start}|{p.stop}" for p in pieces)
    return f"s{ordinal}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def describe_origins(origins: frozenset, stages: list, source_stage: dict) -> str:
    """A downstream task named by the reads its rows come from (``partition 2 (ids
    100-149)``), the same whatever order the reads finished in; "" for rows that come
    from more than one source. ``source_stage`` maps a source ordinal to its stage."""
    from streambatch.executor.contract import as_task_stage
    from streambatch.executor.next_task import describe_read

    reads = sorted(origins)
    if not reads or len({ordinal for ordinal, _ in reads}) != 1:
        return ""
    stage = as_task_stage(stages[source_stage[reads[0][0]]])
    if len(reads) == 1:
        return describe_read(stage.resolved_read_tasks()[reads[0][1]], reads[0][1])
    shown = ", ".join(str(index) for _, index in reads[:4])
    return f"partitions {shown}{', ...' if len(reads) > 4 else ''} (rows bundled into one task)"
