"""The lookup operator: enrich each row with the columns of a table row found by key.

``Lookup`` is the logical operator; ``LookupOp`` its block op. Each worker keeps
its own :class:`FreshCache` (a copy of the template in the plan) and table
connection in ``TaskContext.worker_state``, opened on first use inside the
worker, so they persist across that worker's tasks and never cross a fork.
Every block (micro-batch) makes at most one backend query, for all its missing
keys, deduplicated.

>>> from streambatch.connectors.lookup import DictTable, FreshCache
>>> from streambatch.executor.contract import TaskContext
>>> import pyarrow as pa
>>> op = Lookup(None, table=DictTable({1: {"name": "ada"}}, key="id"), on="id",
...             cache=FreshCache(5.0))
>>> out = list(LookupOp(op).apply(iter([pa.table({"id": [1, 2]})]), TaskContext("s", 0, "p0")))
>>> out[0].to_pylist()
[{'id': 1, 'name': 'ada'}, {'id': 2, 'name': None}]
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from streambatch.connectors.lookup.cache import FreshCache
from streambatch.connectors.lookup.tables import LookupTable
from streambatch.executor.contract import TaskContext, UDFFailure
from streambatch.operators.logical import MapLike

HOWS = ("left", "inner")


@dataclass(frozen=True, eq=False, kw_only=True)
class Lookup(MapLike):
    """Add ``columns`` of ``table``'s row whose key equals column ``on``.

    ``how="left"`` keeps rows without a match (nulls), ``"inner"`` drops them.
    """

    table: LookupTable
    on: str = ""
    how: str = "left"
    columns: tuple[str, ...] | None = None
    cache: FreshCache | None = None

    @property
    def label(self) -> str:
        name = self.table.describe() if hasattr(self.table, "describe") else type(self.table).__name__
        return f"Lookup[{name} on {self.on}, {self.how}]"

    @property
    def row_preserving(self) -> bool:
        return self.how == "left"


class LookupOp:
    """The block op of :class:`Lookup`: one cached, batched lookup per block."""

    holds_gil = False  # backend I/O: thread workers, no block copies
    stays_in_driver = True  # its cache's copies report to the user's FreshCache.stats()
    batch_rows = None
    is_actor = False

    def __init__(self, op: Lookup) -> None:
        self.op = op
        self.changes_row_count = op.how == "inner"
        self._seen: dict[int, dict] = {}  # per cache: columns seen (undeclared tables)

    @property
    def name(self) -> str:
        """The op's label."""
        return self.op.label

    def cache(self, worker_state: dict) -> FreshCache:
        """This worker's cache, connected on first use."""
        key = ("lookup", id(self.op))
        if key not in worker_state:
            template = self.op.cache or FreshCache()
            try:
                worker_state[key] = template.copy().open(self.op.table)
            except Exception as exc:
                raise UDFFailure(self.name, "connecting to the lookup table", exc) from exc
        return worker_state[key]

    def apply(self, blocks, ctx: TaskContext):
        """Yield each block with the looked-up columns appended."""
        cache = None
        for table in blocks:
            if not table.num_rows:
                continue
            if self.op.on not in table.column_names:
                raise KeyError(f"stage {ctx.stage}, {ctx.partition}: lookup key column "
                               f"{self.op.on!r} not in the batch (columns: {table.column_names})")
            cache = cache or self.cache(ctx.worker_state)
            keys = table[self.op.on].to_pylist()
            try:
                found = cache.get_many([k for k in keys if k is not None])
            except Exception as exc:
                raise UDFFailure(self.name, f"looking up {len(set(keys))} keys", exc) from exc
            yield self._join(table, keys, found, cache, ctx)

    def _join(self, table: pa.Table, keys: list, found: dict, cache: FreshCache,
              ctx: TaskContext) -> pa.Table:
        columns = self._columns(cache, found)
        clash = [c for c in columns if c in table.column_names]
        if clash:
            raise ValueError(f"stage {ctx.stage}: lookup columns {clash} already exist in the "
                             "batch; rename them first or pass columns=[...]")
        rows = [found.get(k) if k is not None else None for k in keys]
        if self.op.how == "inner":
            keep = [r is not None for r in rows]
            table = table.filter(pa.array(keep, pa.bool_()))
            rows = [r for r in rows if r is not None]
        schema = getattr(cache.client, "schema", None)
        for name in columns:
            values = [None if r is None else r.get(name) for r in rows]
            kind = schema.field(name).type if schema is not None and name in schema.names else None
            if kind is not None and pa.types.is_null(kind):
                kind = None
            table = table.append_column(name, pa.array(values, type=kind))
        return table

    def _columns(self, cache: FreshCache, found: dict) -> list[str]:
        """The columns added: ``columns=``, else those the table declares, else (a table
        that declares none, such as a Redis hash without ``columns=``) every column seen
        so far in this worker, so a later batch with no match still gets them as nulls."""
        if self.op.columns is not None:
            return list(self.op.columns)
        declared = getattr(cache.client, "columns", None)
        if declared is not None:
            return list(declared)
        seen = self._seen.setdefault(id(cache), {})
        for row in found.values():
            seen.update(dict.fromkeys(row))
        return list(seen)


def lookup_op(plan, table, on, how: str = "left", columns=None, cache=None) -> Lookup:
    """Validate ``Dataset.lookup``'s arguments and build the operator.

    >>> from streambatch.connectors.lookup import DictTable
    >>> lookup_op(None, DictTable({}, key="id"), "id", how="outer")
    Traceback (most recent call last):
    ...
    ValueError: lookup: how='outer'; expected 'left' or 'inner'
    """
    if not callable(getattr(table, "connect", None)):
        raise TypeError(f"lookup: table must be a lookup table (SQLiteTable, RedisTable, "
                        f"PostgresTable...), got {type(table).__name__}")
    if not isinstance(on, str) or not on:
        raise ValueError(f"lookup: on= must name the key column of the dataset, got {on!r}")
    if how not in HOWS:
        raise ValueError(f"lookup: how={how!r}; expected 'left' or 'inner'")
    if isinstance(columns, str):
        columns = [columns]
    if columns is not None and (not columns or not all(isinstance(c, str) for c in columns)):
        raise ValueError(f"lookup: columns= must be a non-empty list of names, got {columns!r}")
    if cache is not None and not isinstance(cache, FreshCache):
        raise TypeError(f"lookup: cache must be a FreshCache, got {type(cache).__name__}")
    return Lookup(plan, table=table, on=on, how=how,
                  columns=tuple(columns) if columns is not None else None,
                  cache=cache if cache is not None else FreshCache())
