"""read_csv and read_json keep integers beyond int64 exact. pyarrow's readers infer
float64 for them (18446744073709551615 read as 1.8446744073709552e+19, silently): a
uint64 column written by write_csv / write_json must come back as the same integers."""

from __future__ import annotations

import decimal
import json

import pyarrow as pa
import pytest

import streambatch as sb

BIG = [2**64 - 1, 2**63 + 1, None, 7]
SIGNED = [-1, 2**63 + 1, None, -(2**70)]


def read_back(fmt: str, path: str) -> pa.Table:
    """What read_csv / read_json make of ``path``, rows by id."""
    table = getattr(sb, f"read_{fmt}")(path).to_arrow()
    return table.take(pa.compute.sort_indices(table["id"]))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_uint64_column_written_comes_back_as_the_same_uint64s(tmp_path, fmt):
    table = pa.table({"id": [0, 1, 2, 3], "u": pa.array(BIG, pa.uint64())})
    getattr(sb.from_arrow(table), f"write_{fmt}")(str(tmp_path / "o"))
    back = read_back(fmt, str(tmp_path / "o"))
    assert back["u"].type == pa.uint64()
    assert back["u"].to_pylist() == BIG


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_negative_and_beyond_int64_integers_come_back_as_decimals(tmp_path, fmt):
    (tmp_path / "o").mkdir()
    if fmt == "csv":
        text = "id,s\n" + "".join(f"{i},{'' if v is None else v}\n" for i, v in enumerate(SIGNED))
    else:
        text = "".join(json.dumps({"id": i, "s": v}) + "\n" for i, v in enumerate(SIGNED))
    (tmp_path / "o" / f"a.{fmt}").write_text(text)
    back = read_back(fmt, str(tmp_path / "o"))
    assert back["s"].type == pa.decimal128(38, 0)
    assert back["s"].to_pylist() == [None if v is None else decimal.Decimal(v) for v in SIGNED]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_floats_as_written_stay_float64(tmp_path, fmt):
    table = pa.table({"id": [0, 1, 2], "f": [1.0, 1e20, 2.0**64]})
    getattr(sb.from_arrow(table), f"write_{fmt}")(str(tmp_path / "o"))
    back = read_back(fmt, str(tmp_path / "o"))
    assert back["f"].type == pa.float64()
    assert back["f"].to_pylist() == [1.0, 1e20, 2.0**64]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_integers_beyond_38_digits_fail_naming_the_file_and_column(tmp_path, fmt):
    (tmp_path / "o").mkdir()
    huge = "1" * 40
    text = f"id,h\n0,{huge}\n" if fmt == "csv" else f'{{"id": 0, "h": {huge}}}\n'
    (tmp_path / "o" / f"a.{fmt}").write_text(text)
    with pytest.raises(Exception, match=rf"a\.{fmt}'.*column 'h' holds integers beyond "
                                        r"decimal128\(38, 0\)"):
        getattr(sb, f"read_{fmt}")(str(tmp_path / "o")).take_all()


def test_json_lists_and_structs_of_wide_integers_are_exact(tmp_path):
    rows = [{"id": 0, "l": [1, 2**64 - 1], "s": {"x": -1, "y": 1.5}},
            {"id": 1, "l": None, "s": {"x": 2**63 + 1, "y": 2.0}}]
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    back = read_back("json", str(tmp_path / "o"))
    assert back["l"].type == pa.list_(pa.uint64())
    assert back["l"].to_pylist() == [[1, 2**64 - 1], None]
    assert back["s"].to_pylist() == [{"x": decimal.Decimal(-1), "y": 1.5},
                                     {"x": decimal.Decimal(2**63 + 1), "y": 2.0}]


def test_csv_of_one_uint64_column_keeps_its_null_rows(tmp_path):
    table = pa.table({"u": pa.array(BIG, pa.uint64())})
    sb.from_arrow(table).write_csv(str(tmp_path / "o"))
    assert sb.read_csv(str(tmp_path / "o")).to_arrow()["u"].to_pylist() == BIG


def test_csv_column_types_given_are_kept(tmp_path):
    import pyarrow.csv as pacsv

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a.csv").write_text("u\n18446744073709551615\n1\n")
    convert = pacsv.ConvertOptions(column_types={"u": pa.float64()})
    back = sb.read_csv(str(tmp_path / "o"), convert_options=convert).to_arrow()
    assert back["u"].type == pa.float64()
    assert convert.column_types == {"u": pa.float64()}  # the caller's options unchanged


def test_a_wide_integer_with_spaces_around_it_in_a_csv_is_exact(tmp_path):
    """pyarrow reads ' 18446744073709551615' as a number (it trims spaces); the check of
    the text as written did not, and the value came back as a rounded float."""
    (tmp_path / "a.csv").write_text("a,b\n 18446744073709551615,x\n5 ,y\n")
    back = sb.read_csv(str(tmp_path)).take_all()
    assert [r["a"] for r in back] == [18446744073709551615, 5]
