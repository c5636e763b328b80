"""Logical operators: small frozen dataclasses forming a tree (a plan).

>>> plan = Limit(MapRows(Read(source=None, name="Range"), fn=str), n=3)
>>> [op.label for op in walk(plan)]
['Read[Range]', 'Map(str)', 'Limit[3]']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from streambatch.executor.contract import Resources

if TYPE_CHECKING:
    import pyarrow.compute as pc
    from streambatch.connectors.datasink import Datasink
    from streambatch.connectors.datasource import Datasource


def fn_name(fn) -> str:
    """A readable name for a UDF (function, class or callable object).

    >>> fn_name(len), fn_name(lambda r: r)
    ('len', '<lambda>')
    """
    return getattr(fn, "__name__", None) or type(fn).__name__


def is_callable_class(fn) -> bool:
    """True for a user's class UDF (constructed once per worker, then called); a built-in
    type (``dict``, ``bool``) is called as a function.

    >>> class Model:
    ...     def __call__(self, row): return row
    >>> is_callable_class(Model), is_callable_class(bool), is_callable_class(len)
    (True, False, False)
    """
    return isinstance(fn, type) and fn.__module__ != "builtins"


@dataclass(frozen=True, eq=False)
class LogicalOp:
    """Base class: ``inputs`` are the upstream operators."""

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        """Upstream operators (empty for sources)."""
        return (self.input,) if hasattr(self, "input") else ()

    @property
    def label(self) -> str:
        """One-line description used in plans and stage names."""
        return type(self).__name__

    def with_inputs(self, *inputs: LogicalOp) -> LogicalOp:
        """A copy of this operator over other inputs."""
        # every op with inputs has an ``input`` field (Union, with several, overrides this)
        return replace(self, input=inputs[0]) if inputs else self  # type: ignore[call-arg]


@dataclass(frozen=True, eq=False)
class Read(LogicalOp):
    """Read from a datasource; pushdowns (columns, filter, limit) are fields."""

    source: Datasource
    name: str = "Read"
    columns: tuple[str, ...] | None = None
    filter: pc.Expression | None = None
    limit: int | None = None

    @property
    def label(self) -> str:
        extras = []
        if self.columns is not None:
            extras.append(f"columns={list(self.columns)}")
        if self.filter is not None:
            extras.append(f"filter={self.filter}")
        if self.limit is not None:
            extras.append(f"limit={self.limit}")
        return f"Read[{self.name}" + (f"; {', '.join(extras)}" if extras else "") + "]"


@dataclass(frozen=True, eq=False)
class MapLike(LogicalOp):
    """An operator applied block by block (fusable with its neighbours)."""

    input: LogicalOp
    resources: Resources = Resources()
    concurrency: tuple[int, int] | None = None

    @property
    def row_preserving(self) -> bool:
        """True when output rows correspond one-to-one to input rows (a limit may then be
        pushed below the op); False for an op that can drop or add a row (a filter, a
        flat_map, ``on_error="skip"``...)."""
        return False


@dataclass(frozen=True, eq=False, kw_only=True)
class UDFArgs:
    """What a user function is called with besides its row or batch, and what a callable
    class is constructed with (once per worker), as Ray Data's ``fn_args`` ...
    ``fn_constructor_kwargs``."""

    fn_args: tuple = ()
    fn_kwargs: dict = field(default_factory=dict)
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False, kw_only=True)
class MapBatches(MapLike, UDFArgs):
    """Apply ``fn`` to batches of ``batch_size`` rows in ``batch_format``.

    ``batch_size_given`` False: the user named no batch size, so ``batch_size`` (1024)
    is only a cap, as Ray Data 2.60's ``batch_size=None``: the op takes its input
    blocks as they come, cut at ``batch_size`` rows (see ``MapBatchesOp.batch_rows``).
    """

    fn: Callable
    batch_size: int | None = 1024
    batch_size_given: bool = True
    batch_format: str = "pyarrow"
    releases_gil: bool | None = None  # None: measured at run time (threads or processes)
    on_error: str = "raise"
    max_retries: int = 0
    retry_exceptions: tuple | None = None

    @property
    def label(self) -> str:
        return f"MapBatches({fn_name(self.fn)})"


@dataclass(frozen=True, eq=False)
class MapRows(MapLike, UDFArgs):
    """Apply ``fn`` to each row (a dict), returning a dict."""

    fn: Callable | None = None
    on_error: str = "raise"
    releases_gil: bool | None = False  # True: threads in the driver; None: measured

    @property
    def label(self) -> str:
        return f"Map({fn_name(self.fn)})"

    @property
    def row_preserving(self) -> bool:
        """One row out per row in, unless ``on_error="skip"`` drops the rows whose call
        raised (to the dead letters).

        >>> MapRows(None, fn=dict).row_preserving, MapRows(None, fn=dict, on_error="skip").row_preserving
        (True, False)
        """
        return self.on_error != "skip"


@dataclass(frozen=True, eq=False)
class Filter(MapLike, UDFArgs):
    """Keep rows where ``fn(row)`` is true, or where the Arrow expression ``expr`` holds."""

    fn: Callable | None = None
    expr: object = None
    on_error: str = "raise"
    releases_gil: bool | None = False  # True: threads in the driver; None: measured

    @property
    def label(self) -> str:
        return f"Filter({fn_name(self.fn) if self.fn else self.expr})"


@dataclass(frozen=True, eq=False)
class FlatMap(MapLike, UDFArgs):
    """Apply ``fn`` to each row, returning a list of rows."""

    fn: Callable | None = None
    on_error: str = "raise"
    releases_gil: bool | None = False  # True: threads in the driver; None: measured

    @property
    def label(self) -> str:
        return f"FlatMap({fn_name(self.fn)})"


@dataclass(frozen=True, eq=False)
class Project(MapLike):
    """Keep (``keep=True``) or drop the named columns."""

    columns: tuple[str, ...] = ()
    keep: bool = True

    @property
    def label(self) -> str:
        return f"{'Select' if self.keep else 'Drop'}{list(self.columns)}"

    @property
    def row_preserving(self) -> bool:
        return True


@dataclass(frozen=True, eq=False)
class RenameColumns(MapLike):
    """Rename columns by a mapping old -> new."""

    mapping: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"Rename({dict(self.mapping)})"

    @property
    def row_preserving(self) -> bool:
        return True


@dataclass(frozen=True, eq=False, kw_only=True)
class AddColumn(MapLike):
    """Add (or replace) column ``name`` computed by ``fn(batch)``."""

    name: str
    fn: Callable
    batch_format: str = "pandas"

    @property
    def label(self) -> str:
        return f"AddColumn({self.name})"

    @property
    def row_preserving(self) -> bool:
        return True


@dataclass(frozen=True, eq=False, kw_only=True)
class Write(MapLike):
    """Write each partition through a datasink (one file per partition)."""

    sink: Datasink

    @property
    def label(self) -> str:
        return f"Write[{getattr(self.sink, 'name', type(self.sink).__name__)}]"


@dataclass(frozen=True, eq=False, kw_only=True)
class Sample(MapLike):
    """Keep each row with probability ``fraction`` (seeded per task by ``seed``)."""

    fraction: float
    seed: int | None = None

    @property
    def label(self) -> str:
        return f"RandomSample({self.fraction:g})"


@dataclass(frozen=True, eq=False)
class Limit(LogicalOp):
    """Keep the first ``n`` rows produced."""

    input: LogicalOp
    n: int = 0

    @property
    def label(self) -> str:
        return f"Limit[{self.n}]"


@dataclass(frozen=True, eq=False)
class Repartition(LogicalOp):
    """Redistribute rows into ``n`` partitions of equal size."""

    input: LogicalOp
    n: int = 1

    @property
    def label(self) -> str:
        return f"Repartition[{self.n}]"


@dataclass(frozen=True, eq=False)
class Union(LogicalOp):
    """Concatenate the outputs of several plans."""

    parts: tuple[LogicalOp, ...] = ()

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return self.parts

    def with_inputs(self, *inputs: LogicalOp) -> LogicalOp:
        return replace(self, parts=tuple(inputs))

    @property
    def label(self) -> str:
        return f"Union[{len(self.parts)}]"


def walk(op: LogicalOp) -> Iterator[LogicalOp]:
    """Operators of a plan, inputs before the operators that consume them."""
    for child in op.inputs:
        yield from walk(child)
    yield op


def render(op: LogicalOp, indent: int = 0) -> str:
    """The plan as an indented tree, output operator first.

    >>> print(render(Limit(Read(source=None, name="Range"), n=2)))
    Limit[2]
    +- Read[Range]
    """
    lines = [("   " * (indent - 1) + "+- " if indent else "") + op.label]
    lines += [render(child, indent + 1) for child in op.inputs]
    return "\n".join(lines)
