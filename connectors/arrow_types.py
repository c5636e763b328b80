"""Type rules of rows to blocks: the common type of two Arrow types (promoted only where
no value changes) and the first value that a type would not hold exactly."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from itertools import chain
from operator import methodcaller

import numpy as np
import pyarrow as pa


class NoCommonType(Exception):
    """Two Arrow types that no type holds both of (``path`` is where inside the value)."""

    def __init__(self, first: pa.DataType, second: pa.DataType, path: str = "") -> None:
        super().__init__(f"{second} has no common type with {first}")
        self.first, self.second, self.path = first, second, path


def unify(first: pa.DataType, second: pa.DataType) -> pa.DataType:
    """The type that holds values of both types exactly, or NoCommonType.

    >>> unify(pa.int64(), pa.float64()), unify(pa.null(), pa.string())
    (DataType(double), DataType(string))
    >>> unify(pa.struct([("a", pa.int64())]), pa.struct([("b", pa.string())]))
    StructType(struct<a: int64, b: string>)
    >>> try:
    ...     unify(pa.bool_(), pa.int64())
    ... except NoCommonType as err:
    ...     print(err)
    int64 has no common type with bool
    """
    if first == second or pa.types.is_null(second):
        return first
    if pa.types.is_null(first):
        return second
    for kind in (_unify_numbers, _unify_decimals, _unify_texts, _unify_lists, _unify_structs):
        found = kind(first, second)
        if found is not None:
            return found
    raise NoCommonType(first, second)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _unify_numbers(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if not (_is_number(a) and _is_number(b)):
        return None
    dtype = np.promote_types(a.to_pandas_dtype(), b.to_pandas_dtype())
    if dtype.kind == "f" and pa.types.is_integer(a) and pa.types.is_integer(b):
        raise NoCommonType(a, b)  # uint64 with a signed int: only a float holds both, inexactly
    return pa.from_numpy_dtype(dtype)


def _unify_decimals(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    decimal = pa.types.is_decimal
    if not (decimal(a) or decimal(b)) or not all(decimal(t) or pa.types.is_integer(t) for t in (a, b)):
        return None
    scale = max(getattr(t, "scale", 0) for t in (a, b))
    digits = max(getattr(t, "precision", 19) - getattr(t, "scale", 0) for t in (a, b))
    precision = digits + scale
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


def _unify_texts(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    for small, large in ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary())):
        if {a, b} <= {small, large}:
            return large
    return None


def duplicate_name(names: list[str]) -> str | None:
    """The first name that ``names`` holds twice, or None.

    >>> duplicate_name(["a", "b", "a"]), duplicate_name(["a", "b"])
    ('a', None)
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def list_like(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _unify_lists(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if not (list_like(a) and list_like(b)):
        return None
    try:
        item = unify(a.value_type, b.value_type)
    except NoCommonType as exc:
        raise NoCommonType(exc.first, exc.second, "[]" + exc.path) from None
    large = pa.types.is_large_list(a) or pa.types.is_large_list(b)
    return pa.large_list(item) if large else pa.list_(item)


def keeps_fields(have: pa.DataType, want: pa.DataType) -> bool:
    """False when a cast from ``have`` to ``want`` would drop a nested field: Arrow casts
    a struct to a struct of fewer fields by leaving the others out, silently (a row's
    ``{"k": 1, "extra": [1, 2]}`` written as ``{"k": 1}``). Lists, maps and structs are
    followed down; other types are the cast's to judge.

    >>> s = pa.struct([("k", pa.int64())])
    >>> keeps_fields(pa.struct([("k", pa.int64()), ("extra", pa.string())]), s)
    False
    >>> keeps_fields(pa.list_(s), pa.list_(pa.struct([("k", pa.int64()), ("x", pa.string())])))
    True
    """
    if pa.types.is_struct(have) and pa.types.is_struct(want):
        wanted = {f.name: f.type for f in want}
        return all(f.name in wanted and keeps_fields(f.type, wanted[f.name]) for f in have)
    if list_like(have) and list_like(want):
        return keeps_fields(have.value_type, want.value_type)
    if pa.types.is_map(have) and pa.types.is_map(want):
        return keeps_fields(have.key_type, want.key_type) and \
            keeps_fields(have.item_type, want.item_type)
    return True


def _unify_structs(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    if not (pa.types.is_struct(a) and pa.types.is_struct(b)):
        return None
    fields = {f.name: f.type for f in a}
    for f in b:
        try:
            fields[f.name] = unify(fields[f.name], f.type) if f.name in fields else f.type
        except NoCommonType as exc:
            raise NoCommonType(exc.first, exc.second, f".{f.name}{exc.path}") from None
    return pa.struct(list(fields.items()))


def misfit(values, typ: pa.DataType, path: str = ""):
    """``(path, python type, arrow type)`` of a value that storing ``values`` as ``typ``
    would change (Arrow's inference turns True into 1.0 among floats, a datetime into
    a date among dates, an int into a date, a float16 into an int...), else None.

    Checks the set of Python types at each level, so a column costs one pass per level.

    >>> misfit([1.5, True], pa.float64())
    ('', <class 'bool'>, DataType(double))
    >>> misfit([[1], [2, np.float16(1.5)]], pa.list_(pa.int64()))
    ('[]', <class 'numpy.float16'>, DataType(int64))
    """
    if pa.types.is_timestamp(typ):
        values = list(values)
    types = set(map(type, values))
    has_none = type(None) in types
    types.discard(type(None))
    bad = next((t for t in types if not _fits(t, typ)), None)
    if bad is not None:
        return path, bad, typ
    if pa.types.is_timestamp(typ) and not _same_awareness(values, typ):
        return path, dt.datetime, typ
    nested = list_like(typ) or pa.types.is_struct(typ)
    if not types or not nested:
        return None
    present = [v for v in values if v is not None] if has_none else values
    if list_like(typ):
        return misfit(_maybe_list(chain.from_iterable(present), typ.value_type), typ.value_type,
                       f"{path}[]")
    for field in typ:
        found = misfit(_maybe_list(map(methodcaller("get", field.name), present), field.type),
                        field.type, f"{path}.{field.name}")
        if found is not None:
            return found
    return None


def _maybe_list(values, typ: pa.DataType):
    """``values`` as a list where ``_misfit`` walks them twice (nested types), else as they are."""
    return list(values) if list_like(typ) or pa.types.is_struct(typ) else values


def _fits(python_type: type, typ: pa.DataType) -> bool:
    """True when Arrow stores values of ``python_type`` as ``typ`` without changing them."""
    for family, check in _FAMILIES:
        if family(typ):
            return check(python_type)
    return True  # a type family Arrow infers without surprises


def _integer_type(t: type) -> bool:
    return (issubclass(t, int) and not issubclass(t, bool)) or issubclass(t, np.integer)


def _same_awareness(values: list, typ: pa.DataType) -> bool:
    """True when every datetime is naive (a naive column) or aware (a zoned one)."""
    naive = typ.tz is None
    return all((v.tzinfo is None) == naive for v in values if isinstance(v, dt.datetime))


_FAMILIES = (
    (pa.types.is_boolean, lambda t: issubclass(t, (bool, np.bool_))),
    (pa.types.is_integer, _integer_type),
    (pa.types.is_floating, lambda t: _integer_type(t) or issubclass(t, (float, np.floating))),
    (pa.types.is_decimal, lambda t: _integer_type(t) or issubclass(t, decimal.Decimal)),
    (lambda typ: pa.types.is_string(typ) or pa.types.is_large_string(typ), lambda t: issubclass(t, str)),
    (lambda typ: pa.types.is_binary(typ) or pa.types.is_large_binary(typ),
     lambda t: issubclass(t, (bytes, bytearray, memoryview))),
    (pa.types.is_date, lambda t: t is dt.date),
    (pa.types.is_timestamp, lambda t: issubclass(t, (dt.datetime, np.datetime64))),
    (pa.types.is_time, lambda t: issubclass(t, dt.time)),
    (pa.types.is_duration, lambda t: issubclass(t, (dt.timedelta, np.timedelta64))),
    (list_like, lambda t: issubclass(t, (list, tuple, set, frozenset, np.ndarray))),
    (pa.types.is_struct, lambda t: issubclass(t, Mapping)),
)
