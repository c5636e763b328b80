"""Predicate translation: a Python row predicate right after a read becomes a pyarrow
expression the read can push down (row-group statistics, no Python per row).

The predicate is traced once, at planning, with a *symbolic row*: ``row["k"]``
is a symbol whose comparisons, ``&``/``|`` (of booleans) and float arithmetic
build a pyarrow expression. Anything else — ``bool()`` of a symbol (``if``,
``and``, ``or``, ``not``, ``in``), attribute or method access, ``~`` (on a
Python bool it is integer inversion, always truthy), ``/``, integer
arithmetic (Python ints never overflow), ``None`` operands, mixed kinds, a
column the row lacks, or any exception — means "not translatable" and the
Python filter stays as it was.

Nulls: Python raises on ``None < 5`` (and ``!=`` is true for ``None``), while an
Arrow filter drops null rows silently. So the result is exact in both cases:

- every column the predicate reads is declared non-nullable: the Python filter
  is *replaced* by the expression, pushed into the read;
- otherwise the read gets the superset ``expr or is_null(col) ...`` (rows with a
  null in a referenced column are kept) and the Python filter stays above it,
  deciding those rows exactly as before (raising, or sending them to the dead
  letters under ``on_error="skip"``). Statistics still skip row groups that
  hold no nulls and no matching values.

The predicate is called once with the symbolic row while planning; a
predicate with side effects sees that call.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pyarrow as pa
from streambatch.operators import logical as L


class _Compute:
    """``pyarrow.compute``, imported on first use (~30 ms that ``import streambatch``
    and the workers' zygote need not pay)."""

    def __getattr__(self, name: str):
        import pyarrow.compute

        return getattr(pyarrow.compute, name)


pc = _Compute()

INT64 = (-(2**63), 2**63 - 1)


_TRACE = threading.local()


class Untranslatable(BaseException):
    """The predicate did something a pyarrow expression cannot mirror exactly.

    A ``BaseException``, so a predicate's own ``except Exception`` does not swallow
    it; and raising it marks the trace failed even if a bare ``except`` does.
    """

    def __init__(self, why: str) -> None:
        super().__init__(why)
        _TRACE.failed = True


def _kind(typ: pa.DataType) -> str | None:
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_integer(typ) and typ != pa.uint64():  # uint64 has no common type with int64
        return "int"
    if pa.types.is_floating(typ):
        return "float"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "str"
    return None


def _literal(value) -> tuple[object, str]:
    if isinstance(value, Sym):
        return value.expr, value.kind
    if isinstance(value, bool):
        return pc.scalar(pa.scalar(value)), "bool"
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise Untranslatable("an integer outside int64")
        return pc.scalar(pa.scalar(value, pa.int64())), "int"
    if isinstance(value, float):
        return pc.scalar(pa.scalar(value, pa.float64())), "float"
    if isinstance(value, str):
        return pc.scalar(pa.scalar(value, pa.string())), "str"
    raise Untranslatable(f"an operand of type {type(value).__name__}")


class Sym:
    """A value of the symbolic row: a pyarrow expression and its kind
    ("bool", "int", "float", "str"); ``wide`` marks a float64 value (arithmetic
    on it is what Python float arithmetic computes).

    >>> print((Sym(pc.field("k"), "int") < 5).expr)
    (k < 5)
    """

    __slots__ = ("expr", "kind", "wide", "columns")
    __hash__ = None  # type: ignore[assignment]  # symbols compare into expressions: unhashable

    def __init__(self, expr, kind: str, wide: bool = True, columns: frozenset = frozenset()) -> None:
        self.expr, self.kind, self.wide, self.columns = expr, kind, wide, columns

    # ---- comparisons --------------------------------------------------------------
    def _compare(self, other, op: str) -> Sym:
        expr, kind = _literal(other)
        numeric = {self.kind, kind} <= {"int", "float"}
        if kind != self.kind and not numeric:
            raise Untranslatable(f"comparing {self.kind} with {kind}")
        if numeric and self.kind != kind:  # Python compares int and float exactly
            if self.kind == "int" and not isinstance(other, Sym):
                raise Untranslatable("an integer column against a float")
            if isinstance(other, int) and float(other) != other:
                raise Untranslatable("a float column against an inexact integer")
            if isinstance(other, Sym):
                raise Untranslatable("an integer column against a float column")
        cols = self.columns | (other.columns if isinstance(other, Sym) else frozenset())
        return Sym(getattr(self.expr, op)(expr), "bool", columns=cols)

    def __lt__(self, other):
        return self._compare(other, "__lt__")

    def __le__(self, other):
        return self._compare(other, "__le__")

    def __gt__(self, other):
        return self._compare(other, "__gt__")

    def __ge__(self, other):
        return self._compare(other, "__ge__")

    def __eq__(self, other):  # noqa: D105 - builds an expression
        return self._compare(other, "__eq__")

    def __ne__(self, other):  # noqa: D105 - builds an expression
        return self._compare(other, "__ne__")

    # ---- boolean logic ------------------------------------------------------------
    def _logic(self, other, op: str) -> Sym:
        expr, kind = _literal(other)
        if self.kind != "bool" or kind != "bool":
            raise Untranslatable("& or | of non-booleans (bitwise in Python)")
        cols = self.columns | (other.columns if isinstance(other, Sym) else frozenset())
        return Sym(getattr(self.expr, op)(expr), "bool", columns=cols)

    def __and__(self, other):
        return self._logic(other, "__and__")

    __rand__ = __and__

    def __or__(self, other):
        return self._logic(other, "__or__")

    __ror__ = __or__

    # ---- arithmetic (float64 only: no overflow, IEEE as in Python) -----------------
    def _arith(self, other, name: str, reflected: bool = False) -> Sym:
        expr, kind = _literal(other)
        wide = self.wide and (other.wide if isinstance(other, Sym) else True)
        if "float" not in (self.kind, kind) or not {self.kind, kind} <= {"int", "float"} or not wide:
            raise Untranslatable("arithmetic other than on float64 values")
        if isinstance(other, Sym) and "int" in (self.kind, other.kind):
            raise Untranslatable("arithmetic mixing an integer column")
        left, right = (expr, self.expr) if reflected else (self.expr, expr)
        cols = self.columns | (other.columns if isinstance(other, Sym) else frozenset())
        return Sym(pc.Expression._call(name, [left, right]), "float", columns=cols)

    def __add__(self, other):
        return self._arith(other, "add")

    def __radd__(self, other):
        return self._arith(other, "add", True)

    def __sub__(self, other):
        return self._arith(other, "subtract")

    def __rsub__(self, other):
        return self._arith(other, "subtract", True)

    def __mul__(self, other):
        return self._arith(other, "multiply")

    def __rmul__(self, other):
        return self._arith(other, "multiply", True)

    # ---- everything else is untranslatable ----------------------------------------
    def __bool__(self):
        raise Untranslatable("the truth value of a column (if/and/or/not/in)")

    def __invert__(self):
        raise Untranslatable("~ (integer inversion in Python)")

    def __iter__(self):
        raise Untranslatable("iterating a value")

    def __len__(self):
        raise Untranslatable("len() of a value")

    def __getattr__(self, name):
        raise Untranslatable(f"attribute {name!r} of a value")


class SymbolicRow:
    """The row a predicate is traced with: ``row[name]`` only (no ``get``, no ``in``).

    >>> row = SymbolicRow(pa.schema([("k", pa.int64())]))
    >>> print((row["k"] >= 2).expr)
    (k >= 2)
    """

    def __init__(self, schema: pa.Schema) -> None:
        self._schema = schema

    def __getitem__(self, name):
        if not isinstance(name, str) or name not in self._schema.names:
            raise Untranslatable(f"column {name!r} is not in the row")
        typ = self._schema.field(name).type
        kind = _kind(typ)
        if kind is None:
            raise Untranslatable(f"column {name!r} of type {typ}")
        return Sym(pc.field(name), kind, wide=kind != "float" or typ == pa.float64(),
                   columns=frozenset({name}))

    def __getattr__(self, name):
        raise Untranslatable(f"row.{name}")

    def __contains__(self, name):
        raise Untranslatable("'in' on the row")

    def __iter__(self):
        raise Untranslatable("iterating the row")

    def __len__(self):
        raise Untranslatable("len() of the row")


def translate_predicate(fn, schema: pa.Schema):
    """``(expression, referenced columns)`` equal to ``fn(row)`` for rows without nulls
    in those columns, or None when ``fn`` is not translatable.

    >>> s = pa.schema([("k", pa.int64()), ("x", pa.float64())])
    >>> expr, cols = translate_predicate(lambda r: (r["k"] < 5) | (r["x"] * 2 > 1.0), s)
    >>> print(expr)
    ((k < 5) or (multiply(x, 2) > 1))
    >>> sorted(cols)
    ['k', 'x']
    >>> translate_predicate(lambda r: r["k"] < 5 and r["x"] > 0, s) is None
    True
    """
    _TRACE.failed = False
    try:
        out = fn(SymbolicRow(schema))
    except (Exception, Untranslatable):  # noqa: BLE001 - or the predicate's own error
        return None
    if _TRACE.failed or not isinstance(out, Sym) or out.kind != "bool":
        return None
    return out.expr, out.columns


def _source_schema(read: L.Read) -> pa.Schema | None:
    try:
        schema = read.source.schema()
    except Exception:  # noqa: BLE001 - no schema without reading: nothing to translate
        return None
    if schema is None:
        return None
    if read.columns is not None:
        names = [c for c in read.columns if c in schema.names]
        schema = pa.schema([schema.field(c) for c in names])
    return schema


def translate_filter(op: L.LogicalOp) -> L.LogicalOp:
    """Push a translatable ``Filter(fn)`` on a ``Read`` into the read (see module doc).

    >>> from streambatch.connectors.memory import ArrowSource
    >>> t = pa.table({"k": pa.array([1, 7], pa.int64())},
    ...              schema=pa.schema([pa.field("k", pa.int64(), nullable=False)]))
    >>> translate_filter(L.Filter(L.Read(ArrowSource([t]), "Arrow"), fn=lambda r: r["k"] > 3)).label
    'Read[Arrow; filter=(k > 3)]'
    """
    if not (isinstance(op, L.Filter) and op.fn is not None and isinstance(op.input, L.Read)):
        return op
    read = op.input
    if not getattr(read.source, "supports_filter", False) or read.limit is not None:
        return op
    schema = _source_schema(read)
    found = translate_predicate(op.fn, schema) if schema is not None else None
    if found is None or schema is None:
        return op
    expr, columns = found
    nullable = [c for c in sorted(columns) if schema.field(c).nullable]
    if not nullable:  # exact: no row can make Python raise or differ
        return replace(read, filter=expr if read.filter is None else read.filter & expr)
    guard = expr
    for col in nullable:  # rows with a null stay for the Python filter to judge
        guard = guard | pc.field(col).is_null()
    if read.filter is not None and str(guard) in str(read.filter):
        return op  # pushed on an earlier pass
    pushed = guard if read.filter is None else read.filter & guard
    return replace(op, input=replace(read, filter=pushed))
