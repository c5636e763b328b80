"""The contract between the plan and the executor: what a plan compiles to and what
the executor runs. It imports nothing else of streambatch, so either side can change
without the other (the planner builds these types; the executor and the backends
run them).

- :class:`Resources`: what one task or actor asks for.
- :class:`TaskContext`: where a task runs (for error messages, worker state, dead
  letters, and a job's cancel).
- :class:`BlockOp`: one operator's transform of a task's blocks.
- Stage kinds, each a type: :class:`TaskStage` (a chain of block ops run as tasks,
  reading from a source or from upstream stages) and the stages the driver runs itself
  on partitions' metadata and slices: :class:`LimitStage`, :class:`UnionStage`,
  :class:`RepartitionStage`, :class:`ExchangeStage` (the middle of an all-to-all).
- :class:`OutputListener`: what the executor tells the consumer of a job's output.
- The errors user code meets inside a task: :class:`UDFFailure`,
  :class:`UDFReturnTypeError`, :class:`RowConversionError`, all
  :class:`StreamBatchError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: importing the contract must not import pyarrow (the
    import pyarrow as pa  # zygote starts at `import streambatch`, before pyarrow loads)


@dataclass(frozen=True)
class Resources:
    """What one task (or actor) of a stage asks for.

    >>> Resources(num_cpus=1) == Resources()
    True
    >>> Resources(num_gpus=0.5).describe()
    'cpu=1, gpu=0.5'
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int = 0
    custom: tuple = ()

    def describe(self) -> str:
        """Short text for plans and stats."""
        parts = [f"cpu={self.num_cpus:g}"]
        if self.num_gpus:
            parts.append(f"gpu={self.num_gpus:g}")
        if self.memory:
            parts.append(f"mem={self.memory}")
        parts += [f"{k}={v:g}" for k, v in self.custom]
        return ", ".join(parts)


def _never() -> bool:
    return False


@dataclass
class TaskContext:
    """Where a task runs: used by operators for error messages and per-worker state.

    >>> TaskContext("Map(f)", 3, "partition 3").partition
    'partition 3'
    """

    stage: str
    task_index: int
    partition: str
    worker_state: dict = field(default_factory=dict)
    key: str = ""  # deterministic lineage key: the same for every attempt of the task
    first_row: int | None = None  # in a numbered stage: how many of the stage's input
    # rows came before this task's (a global row number for a shuffle's map side)
    row_base: int | None = 0  # where the task's input starts among its read partition's
    # rows (for messages; None: unknown, the rows are counted from the task's input)
    dead_letters: list = field(default_factory=list)  # rows sent aside by on_error="skip"
    cancelled: Callable[[], bool] = field(default=_never)  # the job stopped: a
    # thread task (which nothing can kill) checks it before it commits anything lasting

    def check_running(self) -> None:
        """Raise TaskAbandoned when the job has stopped (a sink calls it before each
        commit, so an abandoned thread task never adds a file after the job's cleanup).

        >>> TaskContext("Write", 0, "partition 0").check_running()
        """
        if self.cancelled():
            raise TaskAbandoned(f"{self.stage}: {self.partition} abandoned: the job stopped")


class TaskAbandoned(RuntimeError):
    """A task of a stopped job ends without committing anything."""


class BlockOp(Protocol):
    """One operator's transform of a stream of blocks, run inside a task."""

    name: str
    holds_gil: bool | None  # None: unknown until it runs (the stage's worker is "auto")
    batch_rows: int | None  # rows per batch the op needs (its fixed batch size), if any
    changes_row_count: bool
    is_actor: bool
    stays_in_driver: bool  # state the user reads in the driver: never in a worker process

    def apply(self, blocks: Iterator[pa.Table], ctx: TaskContext) -> Iterator[pa.Table]:
        """Transform the blocks of one task."""


@dataclass
class Stage:
    """A physical stage: its name and the stages it reads from. Subclasses are the
    kinds; the executor finds each kind's behaviour by its type, never by a string.

    >>> LimitStage("Limit[3]", upstream=(0,), limit=3).runs_tasks
    False
    """

    name: str
    upstream: tuple[int, ...] = ()
    runs_tasks: ClassVar[bool] = False  # True: its work is tasks on the backend

    @property
    def is_source(self) -> bool:
        """True when the stage reads from a datasource."""
        return False

    @property
    def uses_actors(self) -> bool:
        """True when tasks run in a pool of long-lived actors (a class UDF, or GPUs)."""
        return False

    @property
    def batch_rows(self) -> int | None:
        """Rows the stage takes per task (its first op's fixed batch size), if any."""
        return None


@dataclass
class TaskStage(Stage):
    """A chain of block ops run as tasks on the backend. A source stage has
    ``read_tasks_fn`` (the executor calls it once at start); the others take the
    partitions of their ``upstream`` stages.

    >>> TaskStage("Map(f)", upstream=(0,), resources=Resources(num_gpus=1)).uses_actors
    True
    """

    runs_tasks: ClassVar[bool] = True
    ops: list = field(default_factory=list)
    read_tasks_fn: Callable[[], list] | None = None
    read_tasks: list | None = None
    resources: Resources = Resources()
    concurrency: tuple[int, int] | None = None
    worker: str = "thread"  # "thread" (in the driver), "process" (worker processes) or
    # "auto" (threads until the first tasks show the UDF holds the GIL: backends/worker_choice)
    out_batch_rows: int | None = None  # output blocks hold multiples of this many rows:
    # the next stage's batch_rows, so its batches are read in place
    bucketed: bool = False  # the map side of an exchange: output i of a task is bucket i,
    # passed on as the ops yield it (never cut or joined)
    grouped: bool = False  # the reduce side of an exchange: a task takes one bucket's
    # partitions (consecutive inputs with the same index)
    numbered: bool = False  # the driver numbers the rows it hands the stage, in the
    # order it hands them (TaskContext.first_row); never fused into its upstream

    @property
    def is_source(self) -> bool:
        """True when the stage reads from a datasource."""
        return self.read_tasks_fn is not None

    @property
    def uses_actors(self) -> bool:
        """True when tasks run in a pool of long-lived actors (a class UDF, or GPUs)."""
        return any(op.is_actor for op in self.ops) or self.resources.num_gpus > 0

    @property
    def changes_row_count(self) -> bool:
        """True when an op of the stage may make more or fewer rows than it takes."""
        return any(op.changes_row_count for op in self.ops)

    @property
    def batch_rows(self) -> int | None:
        """Rows the stage takes per task (its first op's fixed batch size), if any."""
        return self.ops[0].batch_rows if self.ops and not self.is_source else None

    def setup(self, worker_state: dict) -> None:
        """Build the stage's per-actor objects (model loading) before any task arrives."""
        for op in self.ops:
            if getattr(op, "is_actor", False):
                op.instance(worker_state)

    def apply(self, blocks: Iterator[pa.Table], ctx: TaskContext) -> Iterator[pa.Table]:
        """Run the op chain over one task's input blocks."""
        for op in self.ops:
            blocks = op.apply(blocks, ctx)
        return blocks

    def resolved_read_tasks(self) -> list:
        """A source stage's read tasks, which the executor makes from ``read_tasks_fn``
        when a run starts; a RuntimeError before that (or for a stage that reads none).

        >>> TaskStage("Read", read_tasks=["r0", "r1"]).resolved_read_tasks()
        ['r0', 'r1']
        """
        if self.read_tasks is None:
            raise RuntimeError(f"stage {self.name!r} has no read tasks: a source stage's are "
                               "made from its read_tasks_fn when a run starts")
        return self.read_tasks


def as_task_stage(stage: Stage) -> TaskStage:
    """``stage`` as a :class:`TaskStage`, where only a stage of tasks can come (one whose
    ``runs_tasks``, ``is_source`` or ``uses_actors`` is true: only TaskStage's are); any
    other kind raises a TypeError naming it.

    >>> as_task_stage(TaskStage("Map(f)")).name
    'Map(f)'
    >>> as_task_stage(LimitStage("Limit[3]", limit=3))
    Traceback (most recent call last):
    TypeError: stage 'Limit[3]' is a LimitStage, not a stage of tasks (TaskStage)
    """
    if not isinstance(stage, TaskStage):
        raise TypeError(f"stage {stage.name!r} is a {type(stage).__name__}, not a stage of "
                        "tasks (TaskStage)")
    return stage


@dataclass
class ExchangeStage(Stage):
    """The driver's side of an all-to-all operator: once all of its upstream's (bucketed)
    output is in, it passes the partitions on bucket by bucket, for a grouped stage of
    reduce tasks. ``split(tables, at_least)`` (key ranges) cuts all the blocks into at
    least that many buckets instead, each a list of spans ``(block, first row, rows)``;
    ``ordered``: the job keeps the buckets' order (preserve_order).

    >>> ExchangeStage("Sort(x).exchange", upstream=(0,), ordered=True).runs_tasks
    False
    """

    split: Callable[[list, int], list] | None = None
    ordered: bool = False


@dataclass
class LimitStage(Stage):
    """The first ``limit`` rows of its one upstream, in the driver (slices, no copy)."""

    limit: int = 0


@dataclass
class UnionStage(Stage):
    """The partitions of all its upstreams (in order when the job preserves order)."""


@dataclass
class RepartitionStage(Stage):
    """All of its upstream's rows, cut into ``num_partitions`` equal row ranges."""

    num_partitions: int = 1


class OutputListener:
    """What the executor tells the consumer of a job's output: final outputs, dead
    letters and settled reads (a write's sink listens, to keep its manifest; the
    torch loader, to record an epoch's progress). The methods do nothing here.

    Origins are ``(source ordinal, read index)`` pairs of this run; ``identify``
    (given by :meth:`attach` before the run) names one by what it reads, as
    ``[[source ordinal, item, start, stop], ...]``, which holds across runs of
    other layouts.

    >>> OutputListener().on_settled((0, 3))
    """

    stable_blocks = False  # True: the consumer names rows by partition key and offset
    # across runs (a resumable loader), so every run must cut outputs into the same
    # blocks: the executor then keeps the backend's fixed block size instead of sizing
    # each task's blocks from run-time measurements

    def attach(self, identify: Callable[[tuple[int, int]], list]) -> None:
        """Told how to name an origin by what it reads (called once, before the run)."""

    def on_dead_letters(self, rows: list[dict], origins: frozenset) -> None:
        """Rows that a task with these origins sent to the dead letters (``on_error="skip"``)."""

    def on_final_output(self, part, origins: frozenset) -> None:
        """A final-stage partition was produced from these (source, read) origins."""

    def on_settled(self, origin: tuple[int, int]) -> None:
        """Everything descending from read ``origin`` reached the output."""


class StreamBatchError(Exception):
    """Base class of every error streambatch raises on purpose.

    Subclasses keep their constructor arguments in ``_init_args`` so they
    survive pickling between worker processes and the driver.

    >>> import pickle
    >>> err = pickle.loads(pickle.dumps(UDFReturnTypeError("S", "int", "dict")))
    >>> err.stage, err.got
    ('S', 'int')
    """

    _init_args: tuple = ()

    def __reduce__(self):
        return (type(self), self._init_args)


class UDFFailure(StreamBatchError):
    """Raised inside a worker when user code fails; carries the location.

    ``op`` names the operator, ``where`` the row or batch ("row 17: {...}").

    >>> str(UDFFailure("Map(f)", "row 3", ValueError("bad")))
    "Map(f) failed on row 3: ValueError('bad')"
    """

    def __init__(self, op: str, where: str, original: BaseException) -> None:
        self._init_args = (op, where, original,)
        super().__init__(f"{op} failed on {where}: {original!r}")
        self.op, self.where, self.original = op, where, original


class UDFReturnTypeError(StreamBatchError, TypeError, ValueError):
    """A user function returned a value of the wrong type (a ValueError too, as Ray Data
    raises one; a TypeError, as it is one).

    >>> print(UDFReturnTypeError("MapBatches(f)", "int", "pyarrow.Table, dict").args[0])
    stage 'MapBatches(f)' returned int; expected one of: pyarrow.Table, dict
    """

    def __init__(self, stage: str, got: str, expected: str) -> None:
        self._init_args = (stage, got, expected,)
        super().__init__(f"stage '{stage}' returned {got}; expected one of: {expected}")
        self.stage, self.got, self.expected = stage, got, expected


class RowConversionError(UDFReturnTypeError):
    """Rows (or a batch) a stage produced cannot become an Arrow block.

    Names the stage, the partition, the row or batch (``where``), the key, the
    value's type (``got``) and why (``detail``); ``on_error="skip"`` sends such
    rows to the dead letters instead.

    >>> err = RowConversionError("Map(f)", "partition 0", "row 1: {'id': 1}", "str", "a",
    ...                          "'x' has no common type with int64")
    >>> print(str(err).splitlines()[0])
    stage 'Map(f)' returned str for key 'a'; 'x' has no common type with int64. At partition 0, row 1: {'id': 1}.
    """

    def __init__(self, stage: str, partition: str, where: str, got: str, key: str | None,
                 detail: str) -> None:
        self._init_args = (stage, partition, where, got, key, detail)
        for_key = f" for key {key!r}" if key is not None else ""
        TypeError.__init__(
            self, f"stage '{stage}' returned {got}{for_key}; {detail}. At {partition}, {where}.\n"
            "Fix the function's output, or pass on_error=\"skip\" to send such rows to "
            "ds.dead_letters()")
        self.stage, self.got, self.expected = stage, got, detail
        self.partition, self.where, self.key, self.detail = partition, where, key, detail


class ColumnNotFoundError(StreamBatchError, KeyError):
    """An operator names a column its input does not have.

    >>> print(ColumnNotFoundError("Sort(x).map", "x", ["a", "b"]))
    stage 'Sort(x).map': column 'x' not found; the columns are ['a', 'b']
    """

    def __init__(self, stage: str, column: str, columns: list) -> None:
        self._init_args = (stage, column, columns)
        Exception.__init__(self, f"stage '{stage}': column {column!r} not found; the columns "
                                 f"are {columns}")
        self.stage, self.column, self.columns = stage, column, columns

    def __str__(self) -> str:
        return str(self.args[0])


class ColumnTypeError(StreamBatchError, TypeError):
    """An operator needs another type in a column (a sum of strings).

    >>> print(ColumnTypeError("sum(s)", "s", "string", "numbers"))
    sum(s): column 's' holds string; it needs numbers: cast the column first
    """

    def __init__(self, what: str, column: str, kind: str, needs: str) -> None:
        self._init_args = (what, column, kind, needs)
        super().__init__(f"{what}: column {column!r} holds {kind}; it needs {needs}: cast "
                         "the column first")
        self.column, self.kind = column, kind


class SumOverflowError(StreamBatchError, OverflowError):
    """An integer sum past the range of its type (pyarrow's sum would wrap around).

    >>> print(SumOverflowError("sum(x)", "x", "int64"))
    sum(x): the sum of column 'x' (int64) overflows int64; cast the column to float64 (or a decimal) first
    """

    def __init__(self, what: str, column: str, kind: str) -> None:
        self._init_args = (what, column, kind)
        super().__init__(f"{what}: the sum of column {column!r} ({kind}) overflows int64; "
                         "cast the column to float64 (or a decimal) first")
        self.column, self.kind = column, kind
