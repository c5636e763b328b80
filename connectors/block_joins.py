"""Blocks to rows and blocks to one block: the way back from Arrow, and joins of
blocks whose schemas differ (missing columns, promoted types, tensor shapes).

The conversion the other way, rows to a block, is in row_conversion.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from streambatch.connectors.arrow_types import NoCommonType, unify
from streambatch.connectors.row_conversion import table_of
from streambatch.connectors.tensors import (
    is_tensor_type,
    tensor_array,
    tensor_rows,
    tensor_value_type,
    variable_shape_tensor_type,
)

# ------------------------------------------------------------------ block to rows


def block_to_rows(table: pa.Table) -> list[dict]:
    """The rows of a block as dicts; a tensor column gives one numpy array per row.

    >>> from streambatch.connectors.row_conversion import rows_to_block
    >>> rows = block_to_rows(rows_to_block([{"v": np.ones((2, 2)), "n": 1}]))
    >>> rows[0]["v"].shape, rows[0]["n"]
    ((2, 2), 1)
    """
    tensors = [f.name for f in table.schema if is_tensor_type(f.type)]
    if not tensors:
        return table.to_pylist()
    rows = table.drop_columns(tensors).to_pylist() if len(tensors) < table.num_columns else (
        [{} for _ in range(table.num_rows)])
    values = {name: tensor_rows(table.column(name)) for name in tensors}
    names = table.column_names
    return [{n: values[n][i] if n in values else row[n] for n in names} for i, row in enumerate(rows)]


# ------------------------------------------------------------------ across blocks


def concat_blocks(tables: list[pa.Table]) -> pa.Table:
    """Blocks as one table, their schemas unified: missing columns null, types promoted
    (``promote_options="permissive"``), and tensor columns whose shapes or dtypes differ
    between blocks made variable-shape. Columns with no common type fail naming them.

    >>> from streambatch.connectors.row_conversion import rows_to_block
    >>> a = rows_to_block([{"v": np.zeros((2, 2))}])
    >>> b = rows_to_block([{"v": np.ones((3, 1)), "n": 1}])
    >>> t = concat_blocks([a, b])
    >>> t.schema.field("v").type.extension_name, [r.shape for r in tensor_rows(t["v"])]
    ('arrow.variable_shape_tensor', [(2, 2), (3, 1)])
    >>> concat_blocks([table_of({}, 2), table_of({}, 3)]).num_rows  # rows of no columns stay
    5
    """
    if tables and not any(t.num_columns for t in tables):  # Arrow's concatenation drops their rows
        return table_of({}, sum(t.num_rows for t in tables))
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        unified = unify_blocks(tables)
        if unified is tables:
            raise _schema_conflict(tables, exc) from exc
        return pa.concat_tables(unified, promote_options="permissive")


def unify_blocks(tables: list[pa.Table]) -> list[pa.Table]:
    """The blocks with every tensor column of differing types made variable-shape
    (the same list when nothing needed to change). A column of flat lists of numbers
    (or only empty and null lists) where another block holds 1-d tensors becomes
    1-d tensors too: both are rows of numbers of any length.

    >>> from streambatch.connectors.row_conversion import rows_to_block
    >>> a, b = rows_to_block([{"v": np.zeros(2)}]), rows_to_block([{"v": np.zeros(3)}])
    >>> [t.schema.field("v").type.extension_name for t in unify_blocks([a, b])]
    ['arrow.variable_shape_tensor', 'arrow.variable_shape_tensor']
    >>> c = pa.table({"v": pa.array([[], None], pa.list_(pa.null()))})
    >>> [str(t.schema.field("v").type) for t in unify_blocks([a, c])][1]
    'extension<arrow.variable_shape_tensor[value_type=double, ndim=1]>'

    A dictionary-encoded column (a categorical) beside plain blocks is decoded:

    >>> d = pa.table({"s": pa.array(["x"]).dictionary_encode()})
    >>> [str(t.schema.field("s").type) for t in unify_blocks([d, pa.table({"s": ["y"]})])]
    ['string', 'string']
    """
    types: dict[str, set] = {}
    for table in tables:
        for field in table.schema:
            types.setdefault(field.name, set()).add(field.type)
    decoded = {name for name, found in types.items()
               if len(found) > 1 and any(pa.types.is_dictionary(t) for t in found)}
    if decoded:  # a dictionary column joins its plain blocks as its values' type
        tables = [_decoded(table, decoded) for table in tables]
        return unify_blocks(tables)
    mixed = {}
    for name, found in types.items():
        tensors = {t for t in found if is_tensor_type(t)}
        lists = {t for t in found - tensors if _flat_numbers(t)}
        if lists and any(_ndim(t) != 1 for t in tensors):
            lists = set()  # lists of numbers are 1-d: they join no other tensors
        if len(tensors) > 1 or (tensors and lists):
            mixed[name] = _common_dtype(tensors | {_as_tensor_type(t) for t in lists})
    if not mixed:
        return tables
    return [_variable_tensors(table, mixed) for table in tables]


def _decoded(table: pa.Table, names: set) -> pa.Table:
    """``table`` with its dictionary columns among ``names`` as plain columns."""
    for i, field in enumerate(table.schema):
        if field.name in names and pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def _flat_numbers(typ: pa.DataType) -> bool:
    """A list type whose items are numbers or nothing at all (``list<null>``)."""
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        return False
    item = typ.value_type
    return pa.types.is_null(item) or pa.types.is_integer(item) or pa.types.is_floating(item)


def _as_tensor_type(typ: pa.DataType) -> pa.DataType:
    item = typ.value_type
    return variable_shape_tensor_type(pa.float64() if pa.types.is_null(item) else item, 1)


def _common_dtype(types: set) -> np.dtype | None:
    """The numpy dtype that holds every tensor type's values (None: no common one)."""
    try:
        found = [tensor_value_type(t) for t in types]
        common = found[0]
        for typ in found[1:]:
            common = unify(common, typ)
        return np.dtype(common.to_pandas_dtype())
    except NoCommonType:
        return None


def _variable_tensors(table: pa.Table, dtypes: dict) -> pa.Table:
    for i, field in enumerate(table.schema):
        dtype = dtypes.get(field.name)
        if dtype is None:
            continue
        if is_tensor_type(field.type):
            rows, ndim = tensor_rows(table.column(i)), _ndim(field.type)
        elif _flat_numbers(field.type):
            rows, ndim = table.column(i).to_pylist(), 1
        else:
            continue
        rows = [None if r is None else np.asarray(r).astype(dtype, copy=False) for r in rows]
        if any(r is not None for r in rows):
            column = tensor_array(rows, variable=True)
        else:  # only null rows: nothing to infer from, the type says it all
            column = pa.nulls(len(rows), variable_shape_tensor_type(pa.from_numpy_dtype(dtype), ndim))
        table = table.set_column(i, field.name, column)
    return table


def _ndim(typ: pa.DataType) -> int:
    """Dimensions of one row's tensor, for a fixed- or a variable-shape tensor type."""
    if hasattr(typ, "shape"):
        return len(typ.shape)
    return typ.storage_type.field("shape").type.list_size


def _schema_conflict(tables: list[pa.Table], exc: Exception) -> ValueError:
    """An error naming the column whose types across blocks have nothing in common."""
    seen: dict[str, tuple[int, pa.DataType]] = {}
    for index, table in enumerate(tables):
        for field in table.schema:
            if field.name not in seen:
                seen[field.name] = (index, field.type)
                continue
            first, typ = seen[field.name]
            try:
                unify(typ, field.type)
            except NoCommonType:
                return ValueError(
                    f"column {field.name!r} is {typ} in block {first} and {field.type} in block "
                    f"{index}: no common type; make the key hold one type in every row "
                    f"(cast it, e.g. float(x) or str(x))")
    return ValueError(f"blocks cannot be concatenated: {exc}")


def exact_batches(tables: Iterator[pa.Table], batch_size: int | None,
                  drop_last: bool = False) -> Iterator[pa.Table]:
    """Cut a stream of tables into batches of exactly ``batch_size`` rows.

    Slices are zero-copy; a batch that spans two blocks is concatenated.

    >>> t = pa.table({"x": list(range(5))})
    >>> [b.num_rows for b in exact_batches(iter([t, t]), 4)]
    [4, 4, 2]
    >>> [b.num_rows for b in exact_batches(iter([t, t]), 4, drop_last=True)]
    [4, 4]
    """
    if batch_size is None:
        yield from (t for t in tables if t.num_rows)
        return
    for group in row_groups(tables, batch_size):
        if not drop_last or sum(t.num_rows for t in group) == batch_size:
            yield _combine(group)


def row_groups(blocks, n: int) -> Iterator[list[pa.Table]]:
    """The blocks' rows in groups of exactly ``n`` rows (lists of zero-copy slices); the
    last group may be shorter. Streams: a group is yielded as soon as it is full.

    >>> t = pa.table({"x": list(range(5))})
    >>> [sum(b.num_rows for b in g) for g in row_groups([t, t], 4)]
    [4, 4, 2]
    """
    group: list[pa.Table] = []
    have = 0
    for block in blocks:
        start = 0
        while start < block.num_rows:
            take = min(n - have, block.num_rows - start)
            group.append(block.slice(start, take))
            have, start = have + take, start + take
            if have == n:
                yield group
                group, have = [], 0
    if have:
        yield group


def _combine(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    return join_blocks(tables, "a batch spans blocks that").combine_chunks()


def join_blocks(tables: list[pa.Table], what: str = "") -> pa.Table:
    """The blocks as one table, zero-copy when their schemas agree; else unified by
    ``concat_blocks`` (missing columns null, types promoted where no value changes,
    tensor columns whose shapes differ made variable-shape). Blocks of rows with no
    columns keep their rows. Columns with no common type raise a ValueError naming
    the column and both types, prefixed by ``what`` (who joins: "... cannot be joined").

    >>> a, b = pa.table({"x": [1]}), pa.table({"x": [2.5], "y": ["s"]})
    >>> join_blocks([a, b]).to_pylist()
    [{'x': 1.0, 'y': None}, {'x': 2.5, 'y': 's'}]
    >>> join_blocks([a.select([]), b.select([])]).num_rows
    2
    >>> try:
    ...     join_blocks([a, pa.table({"x": ["s"]})], "a batch spans blocks that")
    ... except ValueError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    a batch spans blocks that cannot be joined: column 'x' is int64 in block 0 and string in block 1: no common type; make the key hold one type in every row ...
    """
    try:
        return concat_blocks(tables)
    except ValueError as err:
        if not what:
            raise
        raise ValueError(f"{what} cannot be joined: {err}") from err


def even_cut(batch: pa.Table, pieces: int) -> list[pa.Table]:
    """Cut ``batch`` into ``pieces`` zero-copy slices whose sizes differ by at most one.

    >>> [t.num_rows for t in even_cut(pa.table({"x": list(range(7))}), 3)]
    [3, 2, 2]
    """
    base, extra = divmod(batch.num_rows, pieces)
    out, start = [], 0
    for i in range(pieces):
        size = base + (1 if i < extra else 0)
        out.append(batch.slice(start, size))
        start += size
    return out
