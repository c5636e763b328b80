"""Rows to blocks: the one conversion from Python rows (or columns) to an Arrow block.

Every op that produces rows (``map``, ``flat_map``, ``map_batches`` outputs given
as rows or as columns of Python values, ``add_column``, ``from_items``) builds its
block here, so all follow the same rules:

- **Keys**: the union over the batch, in first-seen order; a row without a key
  holds null there. A row of no keys still counts (a block of N rows, no columns).
- **Types** are unified across rows the way Arrow promotes them: null + T is T;
  integers of different widths give the widest; int + float gives the float
  (float64 for Python ints); str stays string, bytes binary; a list holds the
  unified type of all its items; dicts become structs with the union of their
  fields (a missing field is null); Decimals widen to hold every value.
- **Never lossy**: an int that the common float type cannot hold exactly (beyond
  +-2**53 for float64) is an error, not a rounding; kinds with no common type
  (int and str, bool and int, str and bytes, uint64 and signed ints, timestamps of
  different units) are an error, never a stringification.
- **Arrays**: a numpy array (``ndim >= 1``, 1-d included, as Ray Data does) or a
  torch tensor as a row's value becomes a tensor column (``connectors/tensors``):
  fixed-shape when every row has the same shape, variable-shape otherwise (the
  number of dimensions must agree); dtypes are unified by the rules above. 0-d
  arrays and numpy scalars become their Arrow scalar types. Arrays nested inside
  dicts or lists become (nested) lists. Torch is never imported here: a tensor is
  recognised by its type's module and converted by its own methods.
- **Errors**: what cannot be represented raises :class:`RowsToBlockError`, whose
  ``problems`` name every bad row with its key, its value's type and what to do,
  so callers can raise (naming stage and partition) or send those rows to the
  dead letters and convert the rest.

Fast path: a batch whose rows share one key set is built column by column with
``pa.array`` (what ``pa.Table.from_pylist`` does) plus cheap checks; only a column
that fails or that may hold arrays is converted value by value.

>>> rows_to_block([{"id": 0}, {"id": 1, "b": 2.5}]).to_pylist()
[{'id': 0, 'b': None}, {'id': 1, 'b': 2.5}]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import pyarrow as pa
from streambatch.connectors.arrow_types import NoCommonType, list_like, misfit, unify
from streambatch.connectors.tensors import (
    tensor_array,
)

_ARROW_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError, KeyError, IndexError)
_SAME_TYPE_HINT = "make the key hold one type in every row (cast it, e.g. float(x) or str(x))"
COLUMN_KINDS = "a list, numpy array, torch tensor, pandas/polars Series or Arrow array"


@dataclass(frozen=True)
class Problem:
    """Why one row (``row``) or one whole column (``row=None``) cannot join a block.

    ``key`` is the column (a dotted path inside structs, ``[]`` for list items),
    ``got`` the value's type name, ``detail`` what is wrong and what to do.

    >>> Problem(3, "a", "str", "no common type with int64").describe()
    "row 3, key 'a': got str: no common type with int64"
    """

    row: int | None
    key: str | None
    got: str
    detail: str

    def describe(self) -> str:
        """One line: where, what was found, why it cannot be stored."""
        where = [f"row {self.row}"] if self.row is not None else []
        where += [f"key {self.key!r}"] if self.key is not None else []
        return f"{', '.join(where) or 'batch'}: got {self.got}: {self.detail}"


class RowsToBlockError(ValueError):
    """Rows that cannot become a block; ``problems`` lists each, by row.

    >>> err = RowsToBlockError([Problem(2, "a", "str", "x"), Problem(1, "b", "int", "y")])
    >>> [p.row for p in err.problems], str(err)
    ([1, 2], "row 1, key 'b': got int: y (and 1 more problem in this batch)")
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: -1 if p.row is None else p.row)
        more = len(self.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''} in this batch)" if more else ""
        super().__init__(self.problems[0].describe() + suffix)

    def __reduce__(self):
        return (type(self), (self.problems,))


# ----------------------------------------------------------------------------- rows


def rows_to_block(rows: list) -> pa.Table:
    """A block from rows (dicts): union of keys, unified types, tensors for arrays.

    >>> t = rows_to_block([{"a": 1}, {"a": 2.5, "v": np.zeros(2)}, {"a": None}])
    >>> t.schema.field("a").type, t.schema.field("v").type.extension_name
    (DataType(double), 'arrow.fixed_shape_tensor')
    >>> try:
    ...     rows_to_block([{"a": 1}, {"a": "x"}])
    ... except RowsToBlockError as err:
    ...     print(err)
    row 1, key 'a': got str: 'x' has no common type with int64, the type of this key in row 0; make the key hold one type in every row (cast it, e.g. float(x) or str(x))
    """
    if not rows:
        return pa.table({})
    columns = _same_key_columns(rows)
    if columns is None:
        columns = _union_key_columns(rows)
    return _block(columns, len(rows))


def _same_key_columns(rows: list) -> dict[str, list] | None:
    """The columns when every row has exactly the first row's (string) keys, else None."""
    first = rows[0]
    if type(first) is not dict or not all(isinstance(k, str) for k in first):
        return None
    try:
        columns = {key: list(map(itemgetter(key), rows)) for key in first}
        # every row has the first row's keys; the same count means no other keys either
        return columns if sum(map(len, rows)) == len(first) * len(rows) else None
    except (KeyError, TypeError, IndexError):  # a row lacks a key, or is not a mapping
        return None


def _union_key_columns(rows: list) -> dict[str, list]:
    """The columns over the union of keys (first-seen order); missing keys are None."""
    keys: dict[str, None] = {}
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problems.append(Problem(i, None, type_name(row), "expected one of: dict (one row)"))
            continue
        for key in row:
            if key not in keys:
                if isinstance(key, str):
                    keys[key] = None
                else:
                    problems.append(Problem(i, repr(key), f"a {type_name(key)} key",
                                            "column names must be strings; use str(key)"))
    if problems:
        raise RowsToBlockError(problems)
    return {key: [row.get(key) for row in rows] for key in keys}


def _block(columns: dict[str, list], num_rows: int) -> pa.Table:
    arrays, problems = {}, []
    for key, values in columns.items():
        try:
            arrays[key] = values_to_array(values, key)
        except RowsToBlockError as err:
            problems += err.problems
    if problems:
        raise RowsToBlockError(problems)
    return table_of(arrays, num_rows)


def table_of(arrays: dict, num_rows: int) -> pa.Table:
    """A table of these columns; with no columns, still ``num_rows`` rows.

    >>> table_of({}, 3).num_rows
    3
    """
    if arrays:
        return pa.table(arrays)
    return pa.table({"_": pa.nulls(num_rows)}).drop_columns(["_"])


# ------------------------------------------------------------------------- columns


def columns_to_block(columns: dict, like: pa.Schema | None = None) -> pa.Table:
    """A block from a dict of columns (lists, numpy arrays, tensors, Series, Arrow).

    Every column must have the same length; an n-d numpy array becomes a tensor
    column without a copy.

    >>> columns_to_block({"img": np.zeros((2, 3, 3)), "n": [1, 2]}).schema.names
    ['img', 'n']
    >>> try:
    ...     columns_to_block({"a": [1, 2], "b": [1]})
    ... except RowsToBlockError as err:
    ...     print(err)
    key 'b': got 1 values: column 'a' has 2; every column of a batch needs one value per row
    """
    arrays, problems = {}, []
    for key, values in columns.items():
        if not isinstance(key, str):
            problems.append(Problem(None, repr(key), f"a {type_name(key)} column name",
                                    "column names must be strings; use str(name)"))
            continue
        try:
            arrays[key] = column_to_array(values, key)
        except RowsToBlockError as err:
            kept = _as_before(values, like, key)
            if kept is None:
                problems += err.problems
            else:
                arrays[key] = kept
    problems += _length_problems(arrays)
    if problems:
        raise RowsToBlockError(problems)
    return table_of(arrays, len(next(iter(arrays.values()))) if arrays else 0)


def _as_before(values, like: pa.Schema | None, key: str) -> pa.Array | None:
    """``values`` as the type column ``key`` has in ``like`` (the batch a UDF was given),
    when that type holds them (a map column passed through numpy comes back as lists of
    (key, value) tuples, which no row rule reads as a map); else None.

    >>> like = pa.schema([("m", pa.map_(pa.string(), pa.int64()))])
    >>> _as_before(np.array([[("a", 1)], []], dtype=object), like, "m").to_pylist()
    [[('a', 1)], []]
    >>> _as_before([["a", 1]], like, "x") is None
    True
    """
    if like is None or key not in like.names:
        return None
    given = [None if _pandas_missing(v) else v for v in list(values)]
    try:
        array = pa.array(given, type=like.field(key).type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
            ValueError):
        return None
    try:  # only values the type holds as they are: pyarrow would also truncate 1.5 to
        same = array.to_pylist() == [_plain(v) for v in given]  # 1, drop a struct's extra
    except (TypeError, ValueError):  # field or read 7 as a timestamp, silently
        return None
    return array if same else None


def _plain(value):
    """``value`` as ``to_pylist`` gives it back (numpy arrays as lists, tuples kept)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _length_problems(arrays: dict) -> list[Problem]:
    if not arrays:
        return []
    first, expected = next((k, len(a)) for k, a in arrays.items())
    return [Problem(None, key, f"{len(a)} values",
                    f"column {first!r} has {expected}; every column of a batch needs one value per row")
            for key, a in arrays.items() if len(a) != expected]


def column_to_array(values, key: str = "column"):
    """One column as Arrow: Arrow arrays as they are, n-d arrays as tensors, Python
    values (a list, tuple or object array) by the row rules.

    >>> column_to_array(np.arange(3)).type, column_to_array([[1], [2.5]]).type
    (DataType(int64), ListType(list<item: double>))
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if is_torch(values):
        values = _torch_to_numpy(values, None, key)
    module = type(values).__module__.split(".")[0]
    if module == "polars":
        return values.to_arrow()
    if module == "pandas":
        if values.dtype != object:
            return pa.array(values)
        return values_to_array([None if _pandas_missing(v) else v for v in values], key)
    if isinstance(values, np.ndarray):
        return _numpy_column(values, key)
    if isinstance(values, (list, tuple)):
        return values_to_array(list(values), key)
    raise RowsToBlockError([Problem(None, key, type_name(values), f"a column must be {COLUMN_KINDS}")])


def _pandas_missing(value) -> bool:
    """True for pandas' markers of a missing value in an object column (NaN, NA, NaT)."""
    return (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType", "NaTType")


def _numpy_column(values: np.ndarray, key: str):
    if values.ndim == 0:
        raise RowsToBlockError([Problem(None, key, "a 0-d numpy array",
                                        "a column needs one value per row; wrap it in a list")])
    if values.dtype == object:
        return values_to_array(list(values), key)
    if values.ndim > 1:
        return _stacked_tensor(values, key)
    try:
        return pa.array(values)
    except _ARROW_ERRORS as exc:
        raise RowsToBlockError([Problem(None, key, f"numpy array of {values.dtype}",
                                        f"Arrow cannot hold it ({exc}); convert it with .astype(...)")]) from exc


def _stacked_tensor(values: np.ndarray, key: str):
    if values.dtype.kind not in "biuf":
        raise RowsToBlockError([Problem(None, key, f"numpy array of {values.dtype}", _TENSOR_DTYPE_HINT)])
    return tensor_array(values)


# -------------------------------------------------------------------- one column


def values_to_array(values: list, key: str = "column"):
    """Python values (one per row) as one Arrow array, or RowsToBlockError naming the rows.

    >>> values_to_array([1, None, 2.5]).to_pylist()
    [1.0, None, 2.5]
    >>> values_to_array([np.zeros(2), np.zeros(3)]).type.extension_name
    'arrow.variable_shape_tensor'
    """
    array = _fast_array(values)
    if array is not None:
        return array
    array, problems = _careful_array(values, key)
    if problems:
        raise RowsToBlockError(problems)
    return array


def _fast_array(values: list):
    """``pa.array(values)`` when that is certainly right, else None (take the careful path)."""
    first = next((v for v in values if v is not None), None)
    if is_array(first):
        return None
    try:
        array = pa.array(values)
    except _ARROW_ERRORS:
        return None
    typ = array.type
    if list_like(typ) and any(_is_array_type(t) for t in set(map(type, values))):
        return None  # a 1-d array among lists: the careful path makes tensors or names the row
    if not _safe_inference(typ) and misfit(values, typ) is not None:
        return None  # Arrow's inference changed a value (True as 1.0, a datetime as a date...)
    return array


def _safe_inference(typ: pa.DataType) -> bool:
    """Types Arrow infers only from values it keeps as they are (no check needed)."""
    return pa.types.is_string(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ)


def _careful_array(values: list, key: str):
    """(array, []) or (None, problems): arrays become tensors, else value by value."""
    values = [_plain_top(v) for v in values]
    if any(isinstance(v, np.ndarray) for v in values):
        return _tensor_column(values, key)
    typ, first_row, problems = _infer(values, key)
    if not problems:
        problems = _misfits(values, key, typ, first_row)
    if problems:
        return None, problems
    try:
        return pa.array(values, type=typ), []
    except _ARROW_ERRORS as exc:
        return None, _locate(values, key, typ, first_row, exc)


def _infer(values: list, key: str) -> tuple[pa.DataType, int | None, list[Problem]]:
    """The common type of ``values`` (by first-seen order), and the rows that do not fit it."""
    typ, first_row, problems = pa.null(), None, []
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            found = pa.array([value]).type
        except _ARROW_ERRORS as exc:
            problems.append(Problem(i, key, type_name(value), _unrepresentable(value, exc)))
            continue
        try:
            typ = unify(typ, found)
        except NoCommonType as exc:
            what = f"{short(value)} holds {exc.second} there, which" if exc.path else short(value)
            problems.append(Problem(i, f"{key}{exc.path}", type_name(value), (
                f"{what} has no common type with {exc.first}, the type of this key in "
                f"row {first_row}; {_SAME_TYPE_HINT}")))
            continue
        first_row = i if first_row is None else first_row
    return typ, first_row, problems


def _misfits(values: list, key: str, typ: pa.DataType, first_row) -> list[Problem]:
    """The rows holding (somewhere inside) a value ``typ`` would change, e.g. a bool
    among floats inside a list."""
    if misfit(values, typ) is None:
        return []
    problems = []
    for i, value in enumerate(values):
        found = misfit([value], typ)
        if found is not None:
            path, python_type, arrow_type = found
            problems.append(Problem(i, f"{key}{path}", type_name(value), (
                f"{short(value)} holds a {python_type.__name__} there, which {arrow_type} (the "
                f"common type of this key, set from row {first_row} on) would change; "
                f"{_SAME_TYPE_HINT}")))
    return problems


def _locate(values: list, key: str, typ: pa.DataType, first_row, exc) -> list[Problem]:
    """The rows whose value cannot be stored as ``typ`` (e.g. an int beyond 2**53 among floats)."""
    problems = []
    for i, value in enumerate(values):
        try:
            pa.array([value], type=typ)
        except _ARROW_ERRORS as err:
            problems.append(Problem(i, key, type_name(value), (
                f"{short(value)} cannot be stored as {typ}, the common type of this key "
                f"(set from row {first_row} on) without changing it: {err}; {_SAME_TYPE_HINT}")))
    return problems or [Problem(None, key, str(typ), f"Arrow cannot build the column: {exc}")]


def _unrepresentable(value, exc) -> str:
    if is_torch(value):
        return (f"a torch tensor of dtype {value.dtype} has no numpy equivalent; convert it "
                "first (e.g. t.float())")
    if isinstance(value, int):
        return f"{short(value)} does not fit in 64 bits; store it as a str or a Decimal"
    return (f"Arrow cannot hold {short(value)} ({exc}); convert it to a str, bytes, number, "
            "list, dict or numpy array first")


# ------------------------------------------------------------------------ tensors

_TENSOR_DTYPE_HINT = ("a tensor column holds int, uint or float numbers only; convert it "
                      "with .astype(...) (a bool mask: .astype(np.uint8)) or .tolist()")


def _tensor_column(values: list, key: str):
    """(tensor array, []) or (None, problems) for a column holding numpy arrays."""
    arrays, problems = _same_ndim_arrays(values, key)
    dtype, more = _tensor_dtype(arrays, key)
    problems += more
    if problems:
        return None, problems
    arrays = [None if a is None else a.astype(dtype, copy=False) for a in arrays]
    shapes = {a.shape for a in arrays if a is not None}
    return tensor_array(arrays, variable=len(shapes) > 1), []


def _same_ndim_arrays(values: list, key: str) -> tuple[list, list[Problem]]:
    """The arrays (None for null rows) and the rows that are not arrays of the first one's ndim."""
    arrays: list = [None] * len(values)
    problems, ref = [], None
    for i, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, np.ndarray):
            problems.append(Problem(i, key, type_name(value), (
                f"{short(value)} is not a numpy array, but this key holds numpy arrays in other "
                "rows; return an array (np.asarray) in every row, or a list (.tolist()) in every row")))
        elif value.dtype.kind not in "iuf":
            problems.append(Problem(i, key, f"numpy array of {value.dtype}", _TENSOR_DTYPE_HINT))
        elif ref is not None and value.ndim != ref[1]:
            problems.append(Problem(i, key, f"numpy array of shape {value.shape}", (
                f"row {ref[0]} holds an array of {ref[1]} dimensions, this one {value.ndim}; a tensor "
                "column needs the same number of dimensions in every row (reshape it)")))
        else:
            ref = ref or (i, value.ndim)
            arrays[i] = value
    return arrays, problems


def _tensor_dtype(arrays: list, key: str) -> tuple[np.dtype | None, list[Problem]]:
    """The unified dtype, and the rows whose dtype or values it cannot hold exactly."""
    typ, first_row, problems = None, None, []
    for i, a in enumerate(arrays):
        if a is None:
            continue
        found = pa.from_numpy_dtype(a.dtype)
        try:
            typ = found if typ is None else unify(typ, found)
            first_row = i if first_row is None else first_row
        except NoCommonType:
            arrays[i] = None
            problems.append(Problem(i, key, f"numpy array of {a.dtype}", (
                f"{found} has no common type with {typ}, the dtype of this key in row {first_row}; "
                f"{_SAME_TYPE_HINT}")))
    dtype = None if typ is None else np.dtype(typ.to_pandas_dtype())
    problems += _inexact_rows(arrays, dtype, key)
    return dtype, problems


def _inexact_rows(arrays: list, dtype, key: str) -> list[Problem]:
    """Integer arrays whose values the common float dtype cannot hold exactly."""
    if dtype is None or dtype.kind != "f":
        return []
    limit = 2 ** (np.finfo(dtype).nmant + 1)
    return [Problem(i, key, f"numpy array of {a.dtype}", (
        f"its integers beyond +-{limit} cannot be stored exactly as {dtype}, the common dtype of "
        f"this key (other rows hold floats); {_SAME_TYPE_HINT}"))
        for i, a in enumerate(arrays)
        if a is not None and a.dtype.kind in "iu" and a.size and
        (int(a.max()) > limit or int(a.min()) < -limit)]


# ------------------------------------------------------------- values and types


def is_torch(value) -> bool:
    """True for a torch tensor (found by its type's module: torch is never imported here).

    >>> is_torch(np.zeros(2))
    False
    """
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def is_array(value) -> bool:
    """True for a numpy array or a torch tensor.

    >>> is_array(np.zeros(2)), is_array([1])
    (True, False)
    """
    return isinstance(value, np.ndarray) or is_torch(value)


def _is_array_type(typ: type) -> bool:
    return issubclass(typ, np.ndarray) or (typ.__module__.split(".")[0] == "torch"
                                            and hasattr(typ, "detach"))


def _torch_to_numpy(value, row: int | None, key: str) -> np.ndarray:
    try:
        return value.detach().cpu().resolve_conj().numpy()
    except Exception as exc:  # noqa: BLE001 - e.g. bfloat16 has no numpy dtype
        raise RowsToBlockError([Problem(row, key, "torch.Tensor", _unrepresentable(value, exc))]) from exc


def _as_numpy(value):
    """A torch tensor as numpy (left as it is when it has no numpy dtype: _infer reports it)."""
    try:
        return _torch_to_numpy(value, None, "") if is_torch(value) else value
    except RowsToBlockError:
        return value


def _plain_top(value):
    """A row's value ready to convert: torch to numpy, 0-d arrays to numpy scalars,
    arrays of Python objects (a list column in numpy or pandas form) and arrays nested
    in dicts or lists to lists.

    >>> _plain_top(np.array([{"x": 1}], dtype=object))
    [{'x': 1}]
    """
    value = _as_numpy(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object and value.ndim:
            return [_plain_nested(v) for v in value]
        return value[()] if value.ndim == 0 else value
    return _plain_nested(value) if isinstance(value, (dict, list, tuple)) else value


def _plain_nested(value):
    if isinstance(value, dict):
        return {k: _plain_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_nested(v) for v in value]
    value = _as_numpy(value)
    if isinstance(value, np.ndarray):
        return value[()] if value.ndim == 0 else value if value.ndim == 1 else value.tolist()
    return value


def type_name(value) -> str:
    """A value's type for messages: ``str``, ``numpy.float32``, ``torch.Tensor``.

    >>> type_name("x"), type_name(np.float32(1))
    ('str', 'numpy.float32')
    """
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__name__ if module == "builtins" else f"{module}.{cls.__name__}"


def short(value, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters.

    >>> short("a" * 100, 10)
    "'aaaaaa..."
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
