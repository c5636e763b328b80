"""Parquet schema unification: one dataset schema from many files, types widened only
where no value can change, and a :class:`SchemaMismatchError` naming the column,
both files, both types and what to do wherever they conflict.

The rule is *lossless by type*: two files' types unify to a type that holds every
value of both exactly, or they conflict. So int32 and int64 read as int64, int32
and float64 as float64, uint32 and int32 as int64, string and large_string as
large_string, a dictionary as its values, decimals to a decimal with room for
both, and lists, structs (the union of their fields) and maps element by
element. But int64 and float64 conflict (float64 holds integers exactly only up
to 2**53: pyarrow's permissive promotion would round larger ones, and reading
them through pyarrow's safe cast fails mid-read; Polars refuses the pair), as do
timestamps of different units or time zones (the finer unit cannot hold the
coarser one's range, the coarser loses the finer one's precision), and int vs
string. ``schema=`` decides such a column: the files are then read as the given
types, and a file whose values do not fit is refused by name.

>>> unify_types(pa.int32(), pa.float64()), unify_types(pa.uint32(), pa.int32())
(DataType(double), DataType(int64))
>>> unify_types(pa.int64(), pa.float64()) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

_MANTISSA_BITS = {16: 11, 32: 24, 64: 53}  # integers a float of this width holds exactly
_FLOATS = {16: pa.float16(), 32: pa.float32(), 64: pa.float64()}


class SchemaMismatchError(ValueError):
    """Parquet files (or a file and ``schema=``) disagree on a column's type; the
    message names the column, both files and both types, and what to do.
    ``column``, ``files`` and ``types`` hold the same facts.

    >>> err = SchemaMismatchError("read_parquet: ...", "x", ("a.parquet", "b.parquet"), ("int64", "string"))
    >>> err.column, err.files
    ('x', ('a.parquet', 'b.parquet'))
    """

    def __init__(self, message: str, column: str | None = None, files: tuple = (),
                 types: tuple = ()) -> None:
        super().__init__(message)
        self.column, self.files, self.types = column, tuple(files), tuple(types)


class _Conflict(Exception):
    """Two types (at ``where`` inside a column) that no type holds both of."""

    def __init__(self, a: pa.DataType, b: pa.DataType, where: str = "") -> None:
        super().__init__(where)
        self.a, self.b, self.where = a, b, where


# ---- unification ---------------------------------------------------------------------
def unify_types(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The narrowest type that holds every value of ``a`` and of ``b`` exactly, or None.

    >>> unify_types(pa.list_(pa.int32()), pa.large_list(pa.int8()))
    LargeListType(large_list<item: int32>)
    >>> unify_types(pa.timestamp("ms"), pa.timestamp("ns")) is None
    True
    """
    try:
        return _unify(a, b, "")
    except _Conflict:
        return None


def _unify(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a) or pa.types.is_null(b):
        return b if pa.types.is_null(a) else a
    if pa.types.is_dictionary(a) or pa.types.is_dictionary(b):
        return _unify(_decoded(a), _decoded(b), where)
    for rule in (_unify_numbers, _unify_bytes, _unify_decimals, _unify_nested,
                 _unify_tensors):
        found = rule(a, b, where)
        if found is not None:
            return found
    raise _Conflict(a, b, where)


def holds_null_type(t: pa.DataType) -> bool:
    """True when ``t`` is Arrow's null type or holds it (a list's items, a struct's
    field, a map's values): a file whose values there were all null, which tells
    nothing of the type other files have.

    >>> holds_null_type(pa.struct([("a", pa.null())])), holds_null_type(pa.list_(pa.int8()))
    (True, False)
    """
    if pa.types.is_null(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return holds_null_type(t.value_type)
    if pa.types.is_struct(t):
        return any(holds_null_type(f.type) for f in t)
    if pa.types.is_map(t):
        return holds_null_type(t.key_type) or holds_null_type(t.item_type)
    return False


def _decoded(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _int_bits(t: pa.DataType) -> int:
    """Bits of magnitude an integer type holds."""
    return t.bit_width - (1 if pa.types.is_signed_integer(t) else 0)


def _unify_numbers(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType | None:
    ints, floats = pa.types.is_integer, pa.types.is_floating
    if ints(a) and ints(b):
        if pa.types.is_signed_integer(a) == pa.types.is_signed_integer(b):
            return a if a.bit_width >= b.bit_width else b
        signed, unsigned = (a, b) if pa.types.is_signed_integer(a) else (b, a)
        width = max(signed.bit_width, 2 * unsigned.bit_width)
        return getattr(pa, f"int{width}")() if width <= 64 else None
    if floats(a) and floats(b):
        return a if a.bit_width >= b.bit_width else b
    if (ints(a) and floats(b)) or (floats(a) and ints(b)):
        integer, real = (a, b) if ints(a) else (b, a)
        for width in (16, 32, 64):
            if width >= real.bit_width and _MANTISSA_BITS[width] >= _int_bits(integer):
                return _FLOATS[width]
    return None


def _unify_bytes(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType | None:
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if a in (small, large) and b in (small, large):
            return large
    return None


def _unify_decimals(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType | None:
    if not (pa.types.is_decimal(a) and pa.types.is_decimal(b)):
        return None
    scale = max(a.scale, b.scale)
    precision = max(a.precision - a.scale, b.precision - b.scale) + scale
    if precision <= 38 and a.bit_width == b.bit_width == 128:
        return pa.decimal128(precision, scale)
    return pa.decimal256(precision, scale) if precision <= 76 else None


def _unify_nested(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType | None:
    lists = (pa.types.is_list, pa.types.is_large_list)
    if any(f(a) for f in lists) and any(f(b) for f in lists):
        value = _unify_fields(a.value_field, b.value_field, where + "[]")
        large = pa.types.is_large_list(a) or pa.types.is_large_list(b)
        return pa.large_list(value) if large else pa.list_(value)
    if pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b) and a.list_size == b.list_size:
        return pa.list_(_unify_fields(a.value_field, b.value_field, where + "[]"), a.list_size)
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        theirs = {f.name: f for f in b}
        fields = [_unify_fields(f, theirs[f.name], f"{where}.{f.name}") if f.name in theirs
                  else f.with_nullable(True) for f in a]
        mine = {f.name for f in a}
        return pa.struct(fields + [f.with_nullable(True) for f in b if f.name not in mine])
    if pa.types.is_map(a) and pa.types.is_map(b):
        key = _unify(a.key_type, b.key_type, where + "{key}")
        item = _unify_fields(a.item_field, b.item_field, where + "{value}")
        return pa.map_(key, item)
    return None


def _unify_tensors(a: pa.DataType, b: pa.DataType, where: str) -> pa.DataType | None:
    """Tensor columns of one value type and number of dimensions, whose shapes differ
    between files (a batch padded to its own longest row), read as one variable-shape
    tensor column (:func:`tensor_reader`).

    >>> from streambatch.connectors.tensors import tensor_array
    >>> import numpy as np
    >>> a, b = tensor_array(np.zeros((1, 4))).type, tensor_array(np.zeros((1, 8))).type
    >>> str(unify_types(a, b))
    'extension<arrow.variable_shape_tensor[value_type=double, ndim=1]>'
    """
    from streambatch.connectors.tensors import (
        is_tensor_type,
        tensor_ndim,
        tensor_value_type,
        variable_shape_tensor_type,
    )

    if not (is_tensor_type(a) and is_tensor_type(b)):
        return None
    value, ndim = tensor_value_type(a), tensor_ndim(a)
    if tensor_value_type(b) != value or tensor_ndim(b) != ndim:
        return None
    return variable_shape_tensor_type(value, ndim)


def _unify_fields(a: pa.Field, b: pa.Field, where: str) -> pa.Field:
    return pa.field(a.name, _unify(a.type, b.type, where), a.nullable or b.nullable)


def reads_as(physical: pa.DataType, want: pa.DataType) -> bool:
    """True when every value of ``physical`` reads as ``want`` exactly (the file's
    column can be cast to the dataset's type without a value check).

    >>> reads_as(pa.int32(), pa.int64()), reads_as(pa.int64(), pa.int32())
    (True, False)
    >>> reads_as(pa.int64(), pa.float64())
    False
    """
    if pa.types.is_dictionary(want):
        return reads_as(_decoded(physical), want.value_type)
    found = unify_types(want, physical)  # want first: its field order and names
    return found is not None and _loose(found) == _loose(want)


def _loose(t: pa.DataType) -> pa.DataType:
    """``t`` with every nested field nullable (nullability is not a type conflict)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = pa.field(t.value_field.name, _loose(t.value_type), True)
        if pa.types.is_fixed_size_list(t):
            return pa.list_(value, t.list_size)
        return pa.large_list(value) if pa.types.is_large_list(t) else pa.list_(value)
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _loose(f.type), True) for f in t])
    if pa.types.is_map(t):
        return pa.map_(t.key_type, pa.field(t.item_field.name, _loose(t.item_type), True))
    return t


# ---- messages --------------------------------------------------------------------------
def _advice(name: str, a: pa.DataType, b: pa.DataType, conflict: _Conflict) -> str:
    """Why the two types conflict (the innermost pair) and what to pass as ``schema=``."""
    x, y = conflict.a, conflict.b
    inner = f" (at {name}{conflict.where}: {x} vs {y})" if conflict.where else ""
    ints = pa.types.is_integer
    floats = pa.types.is_floating
    if (ints(x) and floats(y)) or (floats(x) and ints(y)):
        why = (f"; no type holds both exactly: {x if ints(x) else y} values beyond +-2**"
               f"{_MANTISSA_BITS[64]} do not fit a float64 (pyarrow's permissive promotion would "
               f"round them, Polars refuses the pair)")
        what = (f"pass schema= with {name!r} as float64 to read the integers as floats (a file "
                f"holding one beyond +-2**53 is then refused by name), or as string")
    elif pa.types.is_timestamp(x) and pa.types.is_timestamp(y):
        why = ("; timestamps of different units or time zones: the finer unit cannot hold the "
               "coarser one's range, the coarser loses the finer one's precision")
        what = f"pass schema= with {name!r} as the timestamp type to read every file as"
    else:
        why, what = "", f"pass schema= with {name!r} as the type to read it as"
    return f"{inner}{why}; {what}, or read the files separately"


def mismatch(name: str, a: pa.DataType, where_a: str, b: pa.DataType, where_b: str,
             conflict: _Conflict | None = None) -> SchemaMismatchError:
    """The error for column ``name``: type ``a`` in ``where_a`` but ``b`` in ``where_b``.

    >>> print(mismatch("x", pa.int64(), "'a.parquet'", pa.string(), "'b.parquet'"))
    read_parquet: column 'x' is int64 in 'a.parquet' but string in 'b.parquet'; pass schema= with 'x' as the type to read it as, or read the files separately
    """
    conflict = conflict or _Conflict(a, b)
    return SchemaMismatchError(
        f"read_parquet: column {name!r} is {a} in {where_a} but {b} in {where_b}"
        f"{_advice(name, a, b, conflict)}", name, (where_a, where_b), (str(a), str(b)))


# ---- schemas -------------------------------------------------------------------------
def data_schema_of(fragments: dict) -> pa.Schema:
    """The files' unified schema, types from the files that hold rows: a file of no rows
    (an empty write's schema file) adds the columns the others lack and decides no type
    (an empty write of int64, then an append of doubles, could not be read: its int64
    was refused as narrower). All files empty: theirs.

    >>> import pyarrow.dataset as pads, pyarrow.fs as pafs, pyarrow.parquet as pq, tempfile
    >>> d = tempfile.mkdtemp()
    >>> pq.write_table(pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())}), d + "/e.parquet")
    >>> pq.write_table(pa.table({"a": [1.5]}), d + "/f.parquet")
    >>> local = pafs.LocalFileSystem()
    >>> frags = {p: pads.ParquetFileFormat().make_fragment(d + p, filesystem=local)
    ...          for p in ("/e.parquet", "/f.parquet")}
    >>> data_schema_of(frags).types
    [DataType(double), DataType(string)]
    """
    found = [(p, f.physical_schema, f.metadata.num_rows) for p, f in fragments.items()]
    full = [(p, s) for p, s, rows in found if rows]
    if not full or len(full) == len(found):
        return unify_schemas([(p, s) for p, s, _ in found])
    data = unify_schemas(full)
    extra = [field for _, s, rows in found if not rows for field in s
             if field.name not in data.names]
    extra = list({field.name: field for field in extra}.values())
    return pa.schema(list(data) + extra, metadata=data.metadata)


def unify_schemas(schemas: list[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for several files: the union of their columns (first-seen order),
    types unified where no value changes (see the module docstring), a
    :class:`SchemaMismatchError` naming column, files and types where they conflict.

    >>> unify_schemas([("a", pa.schema([("x", pa.int32())])), ("b", pa.schema([("x", pa.int64()), ("y", pa.string())]))])
    x: int64
    y: string
    >>> try:
    ...     unify_schemas([("a.parquet", pa.schema([("x", pa.int64())])),
    ...                    ("b.parquet", pa.schema([("x", pa.float64())]))])
    ... except SchemaMismatchError as exc:
    ...     print(exc.column, exc.files, exc.types)
    x ("'a.parquet'", "'b.parquet'") ('int64', 'double')
    """
    fields: dict[str, pa.DataType] = {}
    origin: dict[str, str] = {}
    metadata = schemas[0][1].metadata if schemas else None
    if schemas and all(s.equals(schemas[0][1]) for _, s in schemas[1:]):  # the usual case
        schemas = schemas[:1]
    nullable: dict[str, bool] = {}  # non-nullable only where every file says so
    for path, schema in schemas:
        for name in nullable.keys() - set(schema.names):
            nullable[name] = True
        for field in schema:
            name = field.name
            if name not in fields:
                fields[name], origin[name] = field.type, path
                nullable[name] = field.nullable or path != schemas[0][0]
                continue
            nullable[name] = nullable[name] or field.nullable
            try:
                fields[name] = _unify(fields[name], field.type, "")
            except _Conflict as conflict:
                raise mismatch(name, fields[name], repr(origin[name]), field.type, repr(path),
                               conflict) from None
    return pa.schema([pa.field(n, t, nullable[n]) for n, t in fields.items()], metadata=metadata)


def column_origins(schema: pa.Schema, files: list[tuple[str, pa.Schema]]) -> dict[str, str]:
    """For each column of the dataset ``schema``, the first of ``files`` that has it
    (where its type came from), for messages.

    >>> column_origins(pa.schema([("x", pa.int64())]), [("a", pa.schema([("y", pa.int8())])),
    ...                                                 ("b", pa.schema([("x", pa.int64())]))])
    {'x': 'b'}
    """
    out: dict[str, str] = {}
    for path, file_schema in files:
        for name in file_schema.names:
            if name in schema.names:
                out.setdefault(name, path)
    return out


def check_file_schema(physical: pa.Schema, schema: pa.Schema, path: str,
                      first: str | Mapping[str, str]) -> None:
    """Refuse a file whose columns do not read as the dataset schema's types without
    a value changing (rather than cast them and fail mid-read, or round them), or
    that holds columns the dataset schema lacks. ``first`` names where the dataset
    schema came from: one file, or a file per column (see :func:`column_origins`).

    >>> dataset = pa.schema([("x", pa.int64())])
    >>> check_file_schema(pa.schema([("x", pa.int32())]), dataset, "b.parquet", "a.parquet")
    >>> try:
    ...     check_file_schema(pa.schema([("y", pa.int32())]), dataset, "b.parquet", "a.parquet")
    ... except SchemaMismatchError as exc:
    ...     print(exc)
    read_parquet: 'b.parquet' has column(s) ['y'] that the dataset schema (from 'a.parquet') lacks; pass schema= with every column to read them
    >>> try:
    ...     check_file_schema(pa.schema([("x", pa.float64())]), dataset, "b.parquet", "a.parquet")
    ... except SchemaMismatchError as exc:
    ...     print(exc.files, exc.types)
    ("'a.parquet' (the dataset schema)", "'b.parquet'") ('int64', 'double')
    """
    types = {f.name: f.type for f in schema}
    origins = first if isinstance(first, Mapping) else {}
    default = first if isinstance(first, str) else next(iter(origins.values()), "")
    extra = [n for n in physical.names if n not in types]
    if extra:
        raise SchemaMismatchError(
            f"read_parquet: {path!r} has column(s) {extra} that the dataset schema (from "
            f"{default!r}) lacks; pass schema= with every column to read them", extra[0],
            (path, default))
    for field in physical:
        want = types[field.name]
        if reads_as(field.type, want):
            continue
        try:
            _unify(want, field.type, "")
            conflict = _Conflict(want, field.type)  # they unify, but wider than the dataset's
        except _Conflict as inner:
            conflict = inner
        source = f"{origins.get(field.name, default)!r} (the dataset schema)"
        raise mismatch(field.name, want, source, field.type, repr(path), conflict)


def _value_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)


def check_file_values(fragment, schema: pa.Schema, path: str) -> bool:
    """With ``schema=`` given: refuse a file (a pyarrow parquet fragment) whose column
    statistics hold a value that the given type cannot hold exactly (e.g. an int64
    above 2**53 read as float64), naming the column, file, value and types, before
    its rows are cast. Columns that read as the given type by type, and files
    without statistics, are not checked here (a cast that fails still stops the
    read). Returns whether any column needed a check by value.

    >>> import os, tempfile, pyarrow.parquet as pq, pyarrow.dataset as pads
    >>> path = os.path.join(tempfile.mkdtemp(), "big.parquet")
    >>> pq.write_table(pa.table({"x": pa.array([2**53 + 1], pa.int64())}), path)
    >>> fragment = pads.ParquetFileFormat().make_fragment(path, filesystem=pa.fs.LocalFileSystem())
    >>> try:
    ...     check_file_values(fragment, pa.schema([("x", pa.float64())]), path)
    ... except SchemaMismatchError as exc:
    ...     print(exc.column, exc.types)
    x ('int64', 'double')
    """
    types = {f.name: f.type for f in schema}
    risky = {f.name: f.type for f in fragment.physical_schema
             if f.name in types and _value_type(f.type) and _value_type(types[f.name])
             and not reads_as(f.type, types[f.name])}
    if not risky:
        return False
    meta = fragment.metadata
    leaves = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    for rg in fragment.row_groups:
        for name, physical in risky.items():
            if name in leaves:
                _check_chunk(meta.row_group(rg.id).column(leaves[name]), name, physical,
                             types[name], path)
    return True


def _check_chunk(chunk, name: str, physical: pa.DataType, want: pa.DataType, path: str) -> None:
    """Cast one column chunk's min and max (from its statistics) to ``want``, safely."""
    stats = chunk.statistics
    if stats is None or not stats.has_min_max:
        return
    try:
        bounds = pa.array([stats.min, stats.max], physical)
    except (OverflowError, ValueError, TypeError, pa.ArrowException):
        return  # statistics not in the column's logical type: the read's cast decides
    for i, value in enumerate(bounds):
        try:
            bounds.slice(i, 1).cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaMismatchError(
                f"read_parquet: column {name!r} is {physical} in {path!r} and holds {value}, "
                f"which schema= reads as {want} and cannot hold exactly ({exc}); pass schema= "
                f"with {name!r} as a type that holds every value of the files ({physical} "
                f"holds this file's; string holds any)", name, (path, "schema="),
                (str(physical), str(want))) from None


# ---- tensor columns whose shape differs between files ------------------------------------
def varied_tensors(schema: pa.Schema) -> list[str]:
    """Columns of ``schema`` that are variable-shape tensors (files may hold them with
    fixed shapes of their own, :func:`_unify_tensors`).

    >>> from streambatch.connectors.tensors import variable_shape_tensor_type
    >>> varied_tensors(pa.schema([("t", variable_shape_tensor_type(pa.int8(), 1)), ("x", pa.int8())]))
    ['t']
    """
    from streambatch.connectors.tensors import VARIABLE

    return [f.name for f in schema if getattr(f.type, "extension_name", None) == VARIABLE]


def scan_schema(schema: pa.Schema, fragment) -> pa.Schema:
    """The schema to scan ``fragment`` with: the dataset's, with each variable-shape
    tensor column the file holds with a fixed shape as the file's own type (Arrow cannot
    cast one tensor type to the other; :func:`as_dataset_tensors` converts the rows)."""
    names = varied_tensors(schema)
    if not names:
        return schema
    physical = fragment.physical_schema
    fields = [physical.field(f.name) if f.name in names and f.name in physical.names
              else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def as_dataset_tensors(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with its fixed-shape tensor columns that the dataset ``schema`` holds
    as variable-shape made so (see :func:`scan_schema`)."""
    from streambatch.connectors.tensors import as_variable_shape

    for name in varied_tensors(schema):
        if name in table.column_names and table.schema.field(name).type != schema.field(name).type:
            column = pa.chunked_array([as_variable_shape(c) for c in table.column(name).chunks],
                                      schema.field(name).type)
            table = table.set_column(table.column_names.index(name), name, column)
    return table
