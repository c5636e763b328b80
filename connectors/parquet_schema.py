"""Parquet schema unification: one dataset schema from many files, types widened where
safe, a clear error naming both files where they conflict."""

from __future__ import annotations

import pyarrow as pa


class SchemaMismatchError(ValueError):
    """Parquet files disagree on a column's type (the message names both files)."""


def _compatible(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both read as, or None when they conflict."""
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_floating(a) and pa.types.is_floating(b):
        return a if a.bit_width >= b.bit_width else b
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        sa, sb_ = pa.types.is_signed_integer(a), pa.types.is_signed_integer(b)
        if sa == sb_:
            return a if a.bit_width >= b.bit_width else b
        signed, unsigned = (a, b) if sa else (b, a)
        return signed if signed.bit_width > unsigned.bit_width else None
    if (pa.types.is_integer(a) and pa.types.is_floating(b)) or (pa.types.is_floating(a) and pa.types.is_integer(b)):
        return pa.float64()
    for pair in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if a in pair and b in pair:
            return pair[1]
    return None


def unify_schemas(schemas: list[tuple[str, pa.Schema]]) -> pa.Schema:
    """One schema for several files: the union of their columns (first-seen order),
    types widened where safe, a clear error where they conflict.

    >>> unify_schemas([("a", pa.schema([("x", pa.int32())])), ("b", pa.schema([("x", pa.int64()), ("y", pa.string())]))])
    x: int64
    y: string
    >>> try:
    ...     unify_schemas([("a.parquet", pa.schema([("x", pa.int64())])),
    ...                    ("b.parquet", pa.schema([("x", pa.string())]))])
    ... except SchemaMismatchError as exc:
    ...     print(exc)
    read_parquet: column 'x' is int64 in 'a.parquet' but string in 'b.parquet'; pass schema= to read_parquet with the type to read it as, or read the files separately
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
            merged = _compatible(fields[name], field.type)
            if merged is None:
                raise SchemaMismatchError(
                    f"read_parquet: column {name!r} is {fields[name]} in {origin[name]!r} but "
                    f"{field.type} in {path!r}; pass schema= to read_parquet with the type to "
                    "read it as, or read the files separately")
            fields[name] = merged
    return pa.schema([pa.field(n, t, nullable[n]) for n, t in fields.items()], metadata=metadata)


def check_file_schema(physical: pa.Schema, schema: pa.Schema, path: str, first: str) -> None:
    """Refuse a file whose columns conflict with the dataset schema (rather than cast
    them silently), or that holds columns the dataset schema lacks.

    >>> dataset = pa.schema([("x", pa.int64())])
    >>> check_file_schema(pa.schema([("x", pa.int32())]), dataset, "b.parquet", "a.parquet")
    >>> try:
    ...     check_file_schema(pa.schema([("y", pa.int32())]), dataset, "b.parquet", "a.parquet")
    ... except SchemaMismatchError as exc:
    ...     print(exc)
    read_parquet: 'b.parquet' has column(s) ['y'] that the dataset schema (from 'a.parquet') lacks; pass schema= with every column to read them
    """
    types = {f.name: f.type for f in schema}
    extra = [n for n in physical.names if n not in types]
    if extra:
        raise SchemaMismatchError(
            f"read_parquet: {path!r} has column(s) {extra} that the dataset schema (from "
            f"{first!r}) lacks; pass schema= with every column to read them")
    for field in physical:
        want = types[field.name]
        if _compatible(want, field.type) is None:
            raise SchemaMismatchError(
                f"read_parquet: column {field.name!r} is {field.type} in {path!r} but {want} in "
                f"the dataset schema (from {first!r}); pass schema= to read_parquet with the "
                "type to read it as, or read the files separately")
