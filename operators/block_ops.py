"""Block ops: what each map-like logical operator does to the blocks of one task.

Each op turns an iterator of pyarrow Tables into another, wraps user-code
failures with the row or batch they failed on, and converts batch formats at
the UDF boundary.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from streambatch.connectors.block_joins import block_to_rows, exact_batches
from streambatch.connectors.row_conversion import (
    Problem,
    RowsToBlockError,
    rows_to_block,
    type_name,
)
from streambatch.executor.contract import (
    RowConversionError,
    TaskContext,
    UDFFailure,
    UDFReturnTypeError,
)
from streambatch.operators import logical as L
from streambatch.operators.batch_format import from_batch, to_batch
from streambatch.operators.columns import column_to_arrow, renamed_names, require_columns
from streambatch.operators.lookup import Lookup, LookupOp


def short_repr(value, limit: int = 200) -> str:
    """``repr`` cut to ``limit`` characters for error messages.

    >>> short_repr({"x": "a" * 300}, limit=20)
    "{'x': 'aaaaaaaaaa..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rebatch(blocks: Iterator[pa.Table], batch_size: int | None) -> Iterator[pa.Table]:
    """Regroup blocks into batches of exactly ``batch_size`` rows (the last may be short).

    >>> t = pa.table({"x": list(range(5))})
    >>> [b.num_rows for b in rebatch(iter([t, t]), 4)]
    [4, 4, 2]
    """
    return exact_batches(blocks, batch_size)


def holds_gil_of(op) -> bool | None:
    """Whether a UDF op holds the GIL: the inverse of its ``releases_gil``, or None
    (not said: the backend measures it on the first tasks, see ``worker="auto"``).

    >>> [holds_gil_of(L.MapRows(None, fn=len, releases_gil=r)) for r in (True, False, None)]
    [False, True, None]
    """
    return None if op.releases_gil is None else not op.releases_gil


@dataclass
class OpBase:
    """Defaults shared by every block op; ``holds_gil`` None: not known before it runs."""

    op: L.LogicalOp
    holds_gil: bool | None = False
    batch_rows: int | None = None
    changes_row_count: bool = False
    is_actor: bool = False
    stays_in_driver: bool = False

    @property
    def name(self) -> str:
        """The op's label (as shown in plans)."""
        return self.op.label

    def __getstate__(self) -> dict:
        """Pickled for a worker without the plan above the op: its logical op's ``input``
        chain reaches the source (a from_items list, say), which workers never need."""
        state = dict(self.__dict__)
        if getattr(state.get("op"), "input", None) is not None:
            state["op"] = replace(state["op"], input=None)
        return state

    def udf(self, ctx: TaskContext):
        """The user function to call: the op's function, or its callable class's object
        in this worker (constructed on first use, as an actor's), with ``fn_args`` and
        ``fn_kwargs`` bound."""
        op: Any = self.op  # an op that calls a user function
        fn = self.instance(ctx.worker_state) if self.is_actor else op.fn
        args, kwargs = getattr(op, "fn_args", ()), getattr(op, "fn_kwargs", {})
        if not args and not kwargs:
            return fn
        return lambda value: fn(value, *args, **kwargs)

    def instance(self, worker_state: dict):
        """The class UDF's object in this worker, constructed on first use."""
        key = ("actor", id(self.op))
        op: Any = self.op  # an op that calls a user function
        if key not in worker_state:
            try:
                worker_state[key] = op.fn(*op.fn_constructor_args, **op.fn_constructor_kwargs)
            except Exception as exc:
                raise UDFFailure(self.name, "the constructor", exc) from exc
        return worker_state[key]

    @property
    def skips_errors(self) -> bool:
        """True when failed rows/batches go to the dead letters (``on_error="skip"``)."""
        return getattr(self.op, "on_error", "raise") == "skip"

    def dead_letter(self, ctx: TaskContext, where: str, exc: BaseException, rows: list) -> None:
        """Record rows that failed, with the error, instead of raising."""
        error = f"{type(exc).__name__}: {exc}"
        for row in rows:
            ctx.dead_letters.append({"stage": ctx.stage, "op": self.name, "partition": ctx.partition,
                                     "where": where, "error": error,
                                     "row": json.dumps(row, default=_jsonable)})

    def conversion_error(self, ctx: TaskContext, where: str, problem: Problem) -> RowConversionError:
        """The error for output that cannot become a block, located at ``where``."""
        return RowConversionError(ctx.stage, ctx.partition, f"{self.name} on {where}", problem.got,
                                  problem.key, problem.detail)


def _jsonable(value):
    """A JSON stand-in for values json cannot write (arrays as lists, others as text)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


class MapBatchesOp(OpBase):
    """Run a batch UDF (function or class) over fixed-size batches.

    Its ``batch_rows`` (the batch size the executor bundles input for, fuses and
    aligns blocks with) is the size the user asked for. Without one (the 1024-row
    default) it is None: each task takes the blocks it gets, cut at 1024 rows, as Ray
    Data 2.60's default ``batch_size=None``. A task then never waits for 1024 rows
    to be queued (256 rows of a slow UDF bundled into one task ran on one CPU of 8),
    and the op fuses after ops that change the row count (``flat_map``).

    >>> from streambatch.operators import logical as L
    >>> [MapBatchesOp(L.MapBatches(None, fn=len, batch_size=1024, batch_size_given=g)).batch_rows
    ...  for g in (True, False)]
    [1024, None]
    """

    op: L.MapBatches

    def __init__(self, op: L.MapBatches) -> None:
        super().__init__(op, holds_gil_of(op), op.batch_size if op.batch_size_given else None,
                         True, L.is_callable_class(op.fn))

    def apply(self, blocks, ctx: TaskContext):
        """Yield the UDF's output blocks for each batch.

        With ``on_error="skip"`` a batch whose UDF fails, or whose output cannot
        become a block, goes to the dead letters whole; its outputs are held until
        the batch is done, so none of its rows is both output and dead letter.
        """
        fn = self.udf(ctx)
        start = ctx.row_base or 0
        for batch in rebatch(blocks, self.op.batch_size):
            where = rows_where(start, batch.num_rows, ctx)
            start += batch.num_rows
            if self.skips_errors:
                yield from self._batch_or_dead_letter(fn, batch, where, ctx)
            else:  # a generator UDF streams its outputs
                yield from (self.to_block(out, where, ctx, batch.schema)
                            for out in self._call(fn, batch, where))

    def _batch_or_dead_letter(self, fn, batch: pa.Table, where: str, ctx: TaskContext):
        try:
            outputs = [self.to_block(out, where, ctx, batch.schema)
                       for out in self._call(fn, batch, where)]
        except UDFFailure as failure:
            self.dead_letter(ctx, where, failure.original, block_to_rows(batch))
            return
        except UDFReturnTypeError as err:
            self.dead_letter(ctx, where, err, block_to_rows(batch))
            return
        yield from outputs

    def to_block(self, out, where: str, ctx: TaskContext, like: pa.Schema | None = None
                 ) -> pa.Table:
        """The UDF's output as a block, or a RowConversionError naming the batch and key
        (``like``: the batch's schema, for the columns the UDF passed through)."""
        try:
            return from_batch(out, ctx.stage, like)
        except RowsToBlockError as err:
            problem = err.problems[0]
            at = f"{where}, output row {problem.row}" if problem.row is not None else where
            raise self.conversion_error(ctx, at, problem) from err
        except UDFReturnTypeError as err:
            if isinstance(err, RowConversionError):
                raise
            raise self.conversion_error(ctx, where, Problem(None, None, err.got, (
                f"expected one of: {err.expected}"))) from err

    def _call(self, fn, batch: pa.Table, where: str):
        """Yield what ``fn`` returns (each item, for a generator), wrapping its failures."""
        try:
            out = fn(to_batch(batch, self.op.batch_format))
            if not inspect.isgenerator(out):
                yield out
                return
            yield from out
        except (UDFReturnTypeError, GeneratorExit):
            raise
        except Exception as exc:
            raise UDFFailure(self.name, where, exc) from exc


_FAILED = object()  # stands for the output of a row that went to the dead letters


def rows_where(start: int, rows: int, ctx: TaskContext) -> str:
    """Names a batch in messages: its rows in the task's read partition (as they reach
    the stage), or in the task's input when that position is unknown.

    >>> rows_where(30, 10, TaskContext("M", 0, "partition 2", row_base=30))
    'batch of rows 30-39 of the partition'
    >>> rows_where(0, 10, TaskContext("M", 0, "partition 2", row_base=None))
    "batch of rows 0-9 of the task's input"
    """
    whose = "the partition" if ctx.row_base is not None else "the task's input"
    return f"batch of rows {start}-{start + rows - 1} of {whose}"


class RowOp(OpBase):
    """Shared row loop of map, filter and flat_map: rows are dicts."""

    def rows_of(self, blocks) -> Iterator[tuple[pa.Table, list]]:
        """Pairs of (block, its rows as dicts; tensors as numpy arrays), skipping empty blocks."""
        for table in blocks:
            if table.num_rows:
                yield table, block_to_rows(table)

    def call_each(self, rows: list, fn, ctx: TaskContext | None = None) -> list:
        """``fn`` applied to each row; a failure names the row (or, when the op skips
        errors, sends the row to the dead letters and yields ``_FAILED`` in its place)."""
        if ctx is not None and self.skips_errors:
            return [self._call_or_skip(fn, row, i, ctx) for i, row in enumerate(rows)]
        out, i = [], 0
        try:
            for i, row in enumerate(rows):  # noqa: B007 - used in the except clause
                out.append(fn(row))
        except Exception as exc:
            raise UDFFailure(self.name, f"row {i}: {short_repr(rows[i])}", exc) from exc
        return out

    def _call_or_skip(self, fn, row, index: int, ctx: TaskContext):
        try:
            return fn(row)
        except Exception as exc:  # noqa: BLE001 - recorded as a dead letter
            self.dead_letter(ctx, f"row {index}", exc, [row])
            return _FAILED

    def to_block(self, ctx: TaskContext, inputs: list, outputs: list, sources: list[int]) -> pa.Table:
        """The block of ``outputs``, where ``outputs[j]`` came from ``inputs[sources[j]]``.

        An output that cannot be stored raises a RowConversionError naming its input
        row; with ``on_error="skip"`` that input row goes to the dead letters (with all
        its outputs) and the rest are converted.
        """
        while True:
            try:
                return rows_to_block(outputs)
            except RowsToBlockError as err:
                bad = self._failed_inputs(ctx, inputs, sources, err)
            keep = [j for j, source in enumerate(sources) if source not in bad]
            outputs, sources = [outputs[j] for j in keep], [sources[j] for j in keep]

    def _failed_inputs(self, ctx: TaskContext, inputs: list, sources: list[int],
                       err: RowsToBlockError) -> set[int]:
        """Raise for the first problem, or (skipping) dead-letter each failed input row."""
        bad: dict[int, RowConversionError] = {}
        for problem in err.problems:
            outputs = [problem.row] if problem.row is not None else range(len(sources))
            for output in outputs:  # a problem of no one row (rare) fails every row
                index = sources[output]
                if index not in bad:
                    bad[index] = self.conversion_error(ctx, self._where(inputs, sources, output), problem)
                if not self.skips_errors:
                    raise bad[index] from err
        for index, error in bad.items():
            self.dead_letter(ctx, f"row {index}", error, [inputs[index]])
        return set(bad)

    def _where(self, inputs: list, sources: list[int], output: int) -> str:
        index = sources[output]
        nth = output - sources.index(index)
        of = f" (its output {nth})" if self.changes_row_count else ""
        return f"row {index}: {short_repr(inputs[index])}{of}"


class MapRowsOp(RowOp):
    """``map``: one dict in, one dict out."""

    op: L.MapRows

    def __init__(self, op: L.MapRows) -> None:
        super().__init__(op, holds_gil=holds_gil_of(op), is_actor=L.is_callable_class(op.fn))

    def apply(self, blocks, ctx: TaskContext):
        """Yield a block of mapped rows per input block."""
        fn = self.udf(ctx)
        for _, rows in self.rows_of(blocks):
            results = self.call_each(rows, fn, ctx)
            sources = [i for i, r in enumerate(results) if r is not _FAILED]
            yield self.to_block(ctx, rows, [results[i] for i in sources], sources)


class FilterOp(RowOp):
    """``filter``: by a row predicate or by an Arrow expression (no Python per row)."""

    op: L.Filter

    def __init__(self, op: L.Filter) -> None:
        super().__init__(op, holds_gil=holds_gil_of(op) if op.fn is not None else False,
                         changes_row_count=True, is_actor=L.is_callable_class(op.fn))

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block with the rows that pass."""
        if self.op.expr is not None:
            yield from (t.filter(self.op.expr) for t in blocks)
            return
        fn = self.udf(ctx)
        for table, rows in self.rows_of(blocks):
            keep = self.call_each(rows, fn, ctx)
            yield _filtered(table, [k is not _FAILED and bool(k) for k in keep])


def _filtered(table: pa.Table, keep: list[bool]) -> pa.Table:
    """The rows of ``table`` where ``keep`` is true, exactly as they came in.

    The block is filtered, not rebuilt from the row dicts: a predicate that changes
    its row (``r.pop("x")``) cannot change or drop the data it passes on, and every
    type (tensors, dictionaries, unions) is kept as is. (``import streambatch``
    already loads pyarrow.compute, so this costs a fresh worker nothing more.)

    >>> t = pa.table({"a": [1, 2, 3]})
    >>> _filtered(t, [True, False, True])["a"].to_pylist()
    [1, 3]
    """
    if all(keep):
        return table
    return table.filter(pa.array(keep, pa.bool_()))


class FlatMapOp(RowOp):
    """``flat_map``: one dict in, a list of dicts out."""

    op: L.FlatMap

    def __init__(self, op: L.FlatMap) -> None:
        super().__init__(op, holds_gil=holds_gil_of(op), changes_row_count=True,
                         is_actor=L.is_callable_class(op.fn))

    def apply(self, blocks, ctx: TaskContext):
        """Yield a block of all produced rows per input block."""
        fn = self.udf(ctx)
        for _, rows in self.rows_of(blocks):
            outputs, sources = [], []
            produce = lambda row: self._produce(fn, row)  # noqa: E731
            for i, produced in enumerate(self.call_each(rows, produce, ctx)):
                if isinstance(produced, _NotRows):
                    self._not_rows(ctx, rows, i, produced.value)
                elif produced is not _FAILED:
                    outputs += produced
                    sources += [i] * len(produced)
            if outputs:
                block = self.to_block(ctx, rows, outputs, sources)
                del outputs, produced  # the UDF's rows, copied into the block: not held
                yield block  # while the next op works on it (S1: 8 MiB a task)

    @staticmethod
    def _produce(fn, row):
        """The UDF's rows for ``row`` as a list (a generator runs here, inside the row's
        error handling), or ``_NotRows`` when it returned something else."""
        produced = fn(row)
        if isinstance(produced, (dict, str, bytes)) or not hasattr(produced, "__iter__"):
            return _NotRows(produced)
        return list(produced)

    def _not_rows(self, ctx: TaskContext, rows: list, index: int, value) -> None:
        problem = Problem(None, None, type_name(value),
                          "expected one of: a list (or iterable) of dicts, one per output row")
        error = self.conversion_error(ctx, f"row {index}: {short_repr(rows[index])}", problem)
        if not self.skips_errors:
            raise error
        self.dead_letter(ctx, f"row {index}", error, [rows[index]])


@dataclass
class _NotRows:
    """What a flat_map UDF returned instead of an iterable of rows."""

    value: object


class ProjectOp(OpBase):
    """``select_columns`` / ``drop_columns``."""

    op: L.Project

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block with only the kept columns."""
        for table in blocks:
            require_columns(table, self.op.columns, ctx.stage)
            yield table.select(list(self.op.columns)) if self.op.keep else table.drop_columns(
                list(self.op.columns))


class RenameOp(OpBase):
    """``rename_columns``."""

    op: L.RenameColumns

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block with renamed columns."""
        mapping = dict(self.op.mapping)
        for table in blocks:
            require_columns(table, tuple(mapping), ctx.stage)
            yield table.rename_columns(renamed_names(table.column_names, mapping,
                                                   f"stage '{ctx.stage}'"))


class AddColumnOp(OpBase):
    """``add_column``: a column computed from the batch by a UDF."""

    op: L.AddColumn

    def __init__(self, op: L.AddColumn) -> None:
        super().__init__(op, holds_gil=True)

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block with the new (or replaced) column."""
        start = ctx.row_base or 0
        for table in (b for b in blocks if b.num_rows):
            where = rows_where(start, table.num_rows, ctx)
            start += table.num_rows
            try:
                batch = to_batch(table, self.op.batch_format)
                values = _aligned(self.op.fn(batch), batch)
            except Exception as exc:
                raise UDFFailure(self.name, where, exc) from exc
            column = self._column(values, table.num_rows, where, ctx)
            if self.op.name in table.column_names:
                index = table.column_names.index(self.op.name)
                yield table.set_column(index, self.op.name, column)
            else:
                yield table.append_column(self.op.name, column)


    def _column(self, values, num_rows: int, where: str, ctx: TaskContext):
        if _is_scalar(values):  # one value for every row, as pandas assigns it
            values = pa.repeat(values if isinstance(values, pa.Scalar) else pa.scalar(
                values.item() if hasattr(values, "item") else values), num_rows)
        try:
            return column_to_arrow(values, num_rows, ctx.stage, self.op.name)
        except RowsToBlockError as err:
            problem = err.problems[0]
            at = f"{where}, row {problem.row}" if problem.row is not None else where
            raise self.conversion_error(ctx, at, problem) from err


def _aligned(values, batch):
    """A pandas Series returned for a pandas batch, aligned on the batch's index as
    pandas assignment (``df.loc[:, col] = values``) aligns it: a reordered Series
    lands on its rows, labels it lacks become NaN (it was placed by position).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"x": [3, 1, 2]})
    >>> _aligned(df["x"].sort_values(), df).tolist()
    [3, 1, 2]
    >>> _aligned(df.loc[df["x"] > 1, "x"] * 10, df).tolist()
    [30.0, nan, 20.0]
    """
    import sys

    pd = sys.modules.get("pandas")  # (a pandas batch means pandas is loaded)
    if pd is not None and isinstance(values, pd.Series) and isinstance(batch, pd.DataFrame):
        return values.reindex(batch.index)
    return values


def _is_scalar(value) -> bool:
    """True for one value (a number, string, bool, None, a numpy or Arrow scalar).

    >>> import numpy as np
    >>> [_is_scalar(v) for v in (1, "a", None, np.float32(2), [1], np.zeros(2))]
    [True, True, True, True, False, False]
    """
    import numpy as np

    return value is None or isinstance(value, (int, float, str, bytes, bool, np.generic,
                                               pa.Scalar))


class WriteOp(OpBase):
    """Write the task's blocks through the datasink as one file; yield a result row."""

    op: L.Write

    def apply(self, blocks, ctx: TaskContext):
        """Yield one small table describing what was written."""
        yield self.op.sink.write(blocks, ctx)


class SampleOp(OpBase):
    """``random_sample``: each row kept with probability ``fraction``, drawn from a
    generator seeded by the seed and the task's lineage key (repeatable per layout)."""

    op: L.Sample

    def __init__(self, op: L.Sample) -> None:
        super().__init__(op, changes_row_count=True)

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block's kept rows."""
        import hashlib

        import numpy as np

        digest = hashlib.sha256(f"{self.op.seed}|{ctx.key}".encode()).digest()
        entropy = int.from_bytes(digest[:8], "little") if self.op.seed is not None else None
        rng = np.random.default_rng(entropy)
        for table in blocks:
            if table.num_rows:
                yield table.filter(pa.array(rng.random(table.num_rows) < self.op.fraction))


OP_TYPES = {
    L.MapBatches: MapBatchesOp,
    L.MapRows: MapRowsOp,
    L.Filter: FilterOp,
    L.FlatMap: FlatMapOp,
    L.Project: ProjectOp,
    L.RenameColumns: RenameOp,
    L.AddColumn: AddColumnOp,
    L.Write: WriteOp,
    L.Sample: SampleOp,
    Lookup: LookupOp,
}


def block_op(op: L.MapLike):
    """The block op for a map-like logical operator (exact type lookup, no chains).

    >>> block_op(L.MapRows(L.Read(None), fn=len, releases_gil=False)).holds_gil
    True
    """
    return OP_TYPES[type(op)](op)
