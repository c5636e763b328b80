"""Exact types for integers beyond int64 in text files (CSV, JSON).

pyarrow's CSV and JSON readers infer float64 for a column of integers of which one
lies beyond int64 (a uint64 such as 18446744073709551615, or 2**63 + 1), which rounds
them silently. The readers find such columns here and read them again as the first of
``KINDS`` that holds every value exactly: int64, uint64 (no value negative), then
decimal128(38, 0); integers beyond 38 digits fail naming the file and the column
(there is no exact Arrow integer type for them).

>>> kinds_fitting(pa.array(["18446744073709551615", "0"]))
[DataType(uint64), Decimal128Type(decimal128(38, 0))]
>>> exact_kind(kinds_fitting(pa.array(["-1", "9223372036854775809"])), "read_csv", "/d/a.csv", "u", "")
Decimal128Type(decimal128(38, 0))
>>> kinds_fitting(pa.array(["1", "2.0"])) is None  # not integers as written
True
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from streambatch.connectors.file_based import FileReadError

KINDS: tuple[pa.DataType, ...] = (pa.int64(), pa.uint64(), pa.decimal128(38, 0))
INTEGER_LITERAL = r"^[+-]?[0-9]+$"
BEYOND_INT64 = 2.0**63  # the least float64 magnitude an integer beyond int64 reads as


def may_hold_wide_ints(values: pa.Array | pa.ChunkedArray) -> bool:
    """True when float64 ``values`` could be integers beyond int64 rounded by a reader:
    every value is whole and one is at least 2**63 in magnitude. (A float64 column of
    integers within int64 is not inferred, so other columns are floats as written.)

    >>> may_hold_wide_ints(pa.array([1.8446744073709552e19, 0.0])), may_hold_wide_ints(pa.array([1e19, 0.5]))
    (True, False)
    """
    values = values.drop_null()
    if not len(values):
        return False
    finite = pc.is_finite(values)
    if not pc.all(finite).as_py():
        return False
    if (pc.max(pc.abs(values)).as_py() or 0.0) < BEYOND_INT64:
        return False
    return bool(pc.all(pc.equal(pc.floor(values), values)).as_py())


def kinds_fitting(literals: pa.Array | pa.ChunkedArray) -> list[pa.DataType] | None:
    """The ``KINDS`` that hold every one of ``literals`` (numbers as written, strings;
    nulls ignored) exactly, or None when one is not an integer as written ("2.0", "1e20")."""
    literals = pc.utf8_trim_whitespace(literals.drop_null())  # (the readers trim numbers)
    if len(literals) and not pc.all(pc.match_substring_regex(literals, INTEGER_LITERAL)).as_py():
        return None
    fitting = []
    for kind in KINDS[:-1]:
        try:
            pc.cast(literals, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        fitting.append(kind)
    # (pyarrow 26's cast to decimal128(38, 0) wraps some values of 40 digits and more
    # instead of failing: count the digits)
    if _most_digits(literals) <= 38:
        fitting.append(KINDS[-1])
    return fitting


def _most_digits(literals: pa.Array | pa.ChunkedArray) -> int:
    """The most significant digits of any of ``literals`` (integers as written).

    >>> _most_digits(pa.array(["-007", "+12", None]))
    2
    """
    digits = pc.utf8_length(pc.utf8_ltrim(pc.utf8_ltrim(literals, "+-"), "0"))
    return pc.max(digits).as_py() or 0


def exact_kind(fitting: list[pa.DataType], who: str, path: str, column: str,
               advice: str = "write them as JSON strings") -> pa.DataType:
    """The first of ``KINDS`` in ``fitting`` (the kinds that hold every value of the
    column); a FileReadError naming the file and the column when none does, ending
    with ``advice`` (how to read them as text).

    >>> exact_kind([], "read_json", "/d/a.json", "big")
    Traceback (most recent call last):
    ...
    streambatch.connectors.file_based.FileReadError: read_json: cannot read '/d/a.json': ValueError: column 'big' holds integers beyond decimal128(38, 0) (more than 38 digits), which no Arrow integer type holds exactly; write them as JSON strings to read them as text
    """
    for kind in KINDS:
        if kind in fitting:
            return kind
    raise FileReadError(who, path, ValueError(
        f"column {column!r} holds integers beyond decimal128(38, 0) (more than 38 digits), "
        f"which no Arrow integer type holds exactly; {advice} to read them as text"))
