"""All-to-all logical operators (groupby/aggregate, distinct, map_groups, sort, shuffle)
and the stages each one plans to: a map side in the upstream's tasks, an exchange in
the driver, a reduce side of one task per bucket (see ``exchange.py``). Keyed operators
partition by key range, as a sort does (map side: each task's rows or partial
aggregates sorted by key; the driver cuts them at boundaries sampled from them), so
their output comes in key order; a shuffle partitions at random.

>>> from streambatch.connectors.memory import RangeSource
>>> from streambatch.operators import logical as L
>>> op = Sort(input=L.Read(RangeSource(4), "Range"), keys=("id",), descending=(True,))
>>> op.label
'Sort(id desc)'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from streambatch.executor.contract import ExchangeStage, Stage, TaskStage
from streambatch.operators import exchange as X
from streambatch.operators import key_ranges as K
from streambatch.operators.aggregate_names import named_uniquely
from streambatch.operators.logical import LogicalOp


def orders_output(plan: LogicalOp) -> bool:
    """Whether the plan's output order means something: an all-to-all in it puts its
    rows in an order (a sort, a groupby's keys, a seeded shuffle) that what follows
    keeps (the executor then runs with ``preserve_order``).

    >>> from streambatch.connectors.memory import RangeSource
    >>> from streambatch.operators import logical as L
    >>> read = L.Read(RangeSource(4), "Range")
    >>> orders_output(read), orders_output(Sort(input=read, keys=("id",), descending=(False,)))
    (False, True)
    """
    from streambatch.operators.logical import walk

    return any(isinstance(op, AllToAll) and op.ordered for op in walk(plan))


@dataclass(frozen=True, eq=False, kw_only=True)
class AllToAll(LogicalOp):
    """Base of the all-to-all operators: every output row may depend on every input row,
    so rules push nothing through one. ``num_partitions``: the buckets (default: from
    the CPUs)."""

    input: LogicalOp
    num_partitions: int | None = None
    ordered = True  # the output comes in key order (Ray Data's groupby output is sorted)
    whole_buckets = False  # True: one output partition per bucket, never cut
    numbered = False  # True: the map side is a numbered stage of its own (row numbers)

    def sides(self, n: int) -> tuple:
        """(map-side op, the driver's split or None for buckets by output number,
        reduce-side op) for ``n`` buckets."""
        raise NotImplementedError

    def buckets_for_cpus(self, num_cpus: int) -> int:
        """Buckets when the operator names none."""
        return default_buckets(num_cpus)

    def stages(self, ups: tuple[int, ...], n: int, worker_for: Callable[[bool], str]
               ) -> list[Stage]:
        """Map side, exchange, reduce side (upstream -k: the k-th stage of this list; the
        planner turns it into a stage index)."""
        map_op, split, reduce_op = self.sides(n)
        return [
            TaskStage(f"{self.label}.map", upstream=ups, ops=[map_op],
                      worker=worker_for(map_op.holds_gil), bucketed=split is None,
                      numbered=self.numbered),
            ExchangeStage(f"{self.label}.exchange", upstream=(-1,), split=split,
                          ordered=self.ordered),
            TaskStage(f"{self.label}.reduce", upstream=(-2,), ops=[reduce_op],
                      worker=worker_for(reduce_op.holds_gil), grouped=True,
                      bucketed=self.whole_buckets),
        ]


@dataclass(frozen=True, eq=False, kw_only=True)
class Aggregate(AllToAll):
    """``aggs`` per group of ``keys`` (no keys: one row over the whole dataset), their
    output names made unique (:func:`~streambatch.operators.aggregate_names.named_uniquely`:
    a repeated generated name gets ``_2``; a chosen name that is taken is a ValueError)."""

    keys: tuple[str, ...]
    aggs: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggs", named_uniquely(self.keys, self.aggs))

    @property
    def label(self) -> str:
        on = f"{', '.join(self.keys)}: " if self.keys else ""
        return f"Aggregate({on}{', '.join(a.name for a in self.aggs)})"

    def sides(self, n: int) -> tuple:
        split = X.columns_checked(_by_key(X.internal_keys(self.keys), n), self.label)
        return X.PartialAggregateOp(self.keys, self.aggs), split, \
            X.AggregateReduceOp(self.keys, self.aggs)


@dataclass(frozen=True, eq=False, kw_only=True)
class Distinct(AllToAll):
    """Each combination of ``keys`` once (``unique``)."""

    keys: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"Distinct({', '.join(self.keys)})"

    def sides(self, n: int) -> tuple:
        return X.DistinctMapOp(self.keys), _by_key(self.keys, n), X.DistinctReduceOp(self.keys)


@dataclass(frozen=True, eq=False, kw_only=True)
class MapGroups(AllToAll):
    """``fn`` over the rows of each group of ``keys``, as one batch in ``batch_format``."""

    keys: tuple[str, ...]
    fn: Callable
    batch_format: str = "default"

    @property
    def label(self) -> str:
        return f"MapGroups({getattr(self.fn, '__name__', type(self.fn).__name__)})"

    def sides(self, n: int) -> tuple:
        return (X.SortMapOp(self.keys, (False,) * len(self.keys)), _by_key(self.keys, n),
                X.MapGroupsReduceOp(self.keys, self.fn, self.batch_format))


@dataclass(frozen=True, eq=False, kw_only=True)
class Sort(AllToAll):
    """Rows in the order of ``keys`` (``descending`` per key; nulls last)."""

    keys: tuple[str, ...]
    descending: tuple[bool, ...]

    @property
    def label(self) -> str:
        return "Sort(" + ", ".join(f"{k}{' desc' if d else ''}"
                                   for k, d in zip(self.keys, self.descending, strict=True)) + ")"

    def sides(self, n: int) -> tuple:
        return (X.SortMapOp(self.keys, self.descending),
                K.range_split(self.keys, self.descending, n, ties=True),
                X.SortReduceOp(self.keys, self.descending))


@dataclass(frozen=True, eq=False, kw_only=True)
class Shuffle(AllToAll):
    """Rows to random buckets (seeded); ``permute``: each bucket's rows in random order too
    (``random_shuffle``), else kept (``repartition(n, shuffle=True)``). The map side
    draws each row's random number from the seed and the row's number in the input,
    so a seeded shuffle gives the same order on any layout, CPUs or bucket count."""

    seed: int | None = None
    permute: bool = True
    numbered = True

    @property
    def ordered(self) -> bool:  # type: ignore[override]
        """A seeded shuffle repeats itself: its buckets come out in their order."""
        return self.seed is not None

    @property
    def whole_buckets(self) -> bool:  # type: ignore[override]
        """``repartition(n, shuffle=True)`` makes exactly ``n`` partitions."""
        return not self.permute

    @property
    def label(self) -> str:
        kind = "RandomShuffle" if self.permute else "Repartition"
        return f"{kind}(seed={self.seed})" if self.permute else \
            f"{kind}[{self.num_partitions}, shuffle]"

    def sides(self, n: int) -> tuple:
        return X.RandomPartitionOp(n, self.seed), None, X.ShuffleReduceOp(self.permute)

    def buckets_for_cpus(self, num_cpus: int) -> int:
        """A random shuffle's reduce tasks are small (:func:`shuffle_buckets`);
        ``repartition(n, shuffle=True)`` always names its ``n``."""
        return shuffle_buckets(num_cpus) if self.permute else default_buckets(num_cpus)


@dataclass(frozen=True, eq=False, kw_only=True)
class Join(AllToAll):
    """Rows of ``input`` and ``right`` whose ``keys`` / ``right_keys`` are equal, as SQL's
    joins (``how``: inner, left, right, outer, semi, anti; a null key matches nothing)."""

    right: LogicalOp
    keys: tuple[str, ...]
    right_keys: tuple[str, ...]
    how: str = "inner"
    suffixes: tuple[str, str] = ("", "_1")
    ordered = False

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return (self.input, self.right)

    def with_inputs(self, *inputs: LogicalOp) -> LogicalOp:
        return replace(self, input=inputs[0], right=inputs[1])

    @property
    def label(self) -> str:
        return f"Join({self.how} on {', '.join(self.keys)})"

    def stages(self, ups, n, worker_for) -> list[Stage]:
        return _join_stages(self, ups, n)


def _by_key(keys: tuple[str, ...], n: int):
    """The driver's split of key-sorted blocks into ``n`` key ranges (a group never spans
    two: rows equal to a boundary all go above it)."""
    return K.range_split(keys, (False,) * len(keys), n)


def default_buckets(num_cpus: int) -> int:
    """Buckets of an exchange when the operator names none: two per CPU.

    >>> default_buckets(2)
    4
    """
    return max(1, 2 * num_cpus)


SHUFFLE_BUCKETS_PER_CPU = 16
SHUFFLE_BUCKETS_MAX = 256


def shuffle_buckets(num_cpus: int) -> int:
    """Buckets of a ``random_shuffle`` that names none: :data:`SHUFFLE_BUCKETS_PER_CPU`
    per CPU. A seeded shuffle's output comes in bucket order, and its reduce tasks
    usually carry the next stage fused into them (W2: the JPEG decode), so a task's
    output waits until the bucket before it is done, then reaches the consumer all
    at once. With two buckets per CPU (1,000 JPEG rows each in W2) that was 14 decoded
    blocks at once, more than the loader takes without waiting for the training step,
    and the executor started no task while it handed them over: a slot sat idle
    0.1-0.2 s of a 2.2 s epoch. With small buckets what waits is a block or two, and
    the reduce tasks also share the last CPU-seconds of the epoch evenly. The order
    of rows does not depend on the bucket count (RandomPartitionOp). On many CPUs the
    count stops at :data:`SHUFFLE_BUCKETS_MAX` (never under two per CPU): every map
    task makes one partition per bucket, which the driver keeps track of.

    >>> shuffle_buckets(2), shuffle_buckets(16), shuffle_buckets(64), shuffle_buckets(256)
    (32, 256, 256, 512)
    """
    return max(1, min(SHUFFLE_BUCKETS_PER_CPU * num_cpus,
                      max(SHUFFLE_BUCKETS_MAX, default_buckets(num_cpus))))


def exchange_stages(op: AllToAll, ups: tuple[int, ...], num_cpus: int,
                    worker_for: Callable[[bool], str]) -> list[Stage]:
    """The stages of an all-to-all operator: map side(s), exchange, reduce side."""
    return op.stages(ups, op.num_partitions or op.buckets_for_cpus(num_cpus), worker_for)


def _join_stages(op: Join, ups: tuple[int, ...], n: int) -> list[Stage]:
    """Each side sorted by its keys in its own tasks, cut into key ranges in the driver,
    each range joined in one task (upstream -k: the k-th stage of this list)."""
    return [
        TaskStage(f"{op.label}.map left", upstream=(ups[0],), ops=[X.JoinMapOp(op.keys, 0)]),
        TaskStage(f"{op.label}.map right", upstream=(ups[1],),
                  ops=[X.JoinMapOp(op.right_keys, 1)]),
        ExchangeStage(f"{op.label}.exchange", upstream=(-1, -2),
                      split=K.join_split(op.keys, op.right_keys, n)),
        TaskStage(f"{op.label}.reduce", upstream=(-3,), grouped=True,
                  ops=[X.JoinReduceOp(op.keys, op.right_keys, op.how, op.suffixes)]),
    ]
