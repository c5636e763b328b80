"""Parquet read with ``schema=`` (issue 14 follow-up): a value the given type cannot
hold, where the file's statistics did not show it (a value between min and max, a
file without statistics), is a SchemaMismatchError naming the file, the column, the
file's type, the requested type and the value, not "the file is not a complete
parquet file"; in a task's own read and in a shared scan of several small files
alike. Each test failed on the code before it, except where marked."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors import parquet as pqmod
from streambatch.connectors.datasource import Pushdowns
from streambatch.connectors.file_based import FileReadError
from streambatch.connectors.parquet_schema import SchemaMismatchError

import streambatch as sb


def _cause(error: BaseException, kind: type) -> BaseException:
    """``error`` or the first exception of type ``kind`` in its cause chain."""
    seen = error
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    assert seen is not None, f"no {kind.__name__} behind {error!r}"
    return seen


INTS = pa.schema([("x", pa.int64())])


def _mismatch(path: str, **kwargs) -> SchemaMismatchError:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        sb.read_parquet(path, **kwargs).take_all()
    return _cause(info.value, SchemaMismatchError)


def _assert_names(error: SchemaMismatchError, path: str, value: str, types=("double", "int64")):
    text = str(error)
    assert error.column == "x" and "column 'x'" in text
    assert error.files == (path, "schema=") and path in text
    assert error.types == types and all(t in text for t in types)
    assert f"holds {value}" in text and "pass schema=" in text
    assert "not a complete parquet file" not in text


def test_a_value_inside_the_statistics_range_that_schema_cannot_hold(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [1.0, 1.5, 2.0]}), path)  # min 1.0, max 2.0 both cast
    _assert_names(_mismatch(path, schema=INTS), path, "1.5")


def test_a_file_without_statistics(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [3.0, 4.5]}), path, write_statistics=False)
    _assert_names(_mismatch(path, schema=INTS), path, "4.5")


def test_int_beyond_2_53_read_as_float64_from_a_file_without_statistics(tmp_path):
    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": pa.array([1, 2**53 + 1], pa.int64())}), path,
                   write_statistics=False)
    error = _mismatch(path, schema=pa.schema([("x", pa.float64())]))
    _assert_names(error, path, str(2**53 + 1), ("int64", "double"))


def test_pieces_scanned_together_name_the_file_that_does_not_fit(tmp_path, monkeypatch):
    """A projected read of small files is one scan per task; its failure is traced to a file."""
    monkeypatch.setattr(pqmod, "ONE_PER_TASK", 0)
    good, bad = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [1, 2]}), good)
    pq.write_table(pa.table({"x": [3.0, 3.25, 4.0], "y": [1, 2, 3]}), bad)
    tasks = pqmod.ParquetSource(str(tmp_path), schema=pa.schema([("x", pa.int64()), ("y", pa.int64())]))
    assert [len(t.pieces) for t in tasks.read_tasks(1, Pushdowns(columns=["x"]))] == [2]
    error = _mismatch(str(tmp_path), schema=pa.schema([("x", pa.int64()), ("y", pa.int64())]),
                      columns=["x"], override_num_blocks=1)
    _assert_names(error, bad, "3.25")


def test_a_cast_failure_is_a_mismatch_under_on_error_skip_too(tmp_path):
    """As a mismatch the statistics show (schema= decides how files are read, it is
    not bad data to skip)."""
    path = str(tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [1.0, 1.5, 2.0]}), path)
    _assert_names(_mismatch(path, schema=INTS, on_error="skip"), path, "1.5")


def test_a_truncated_file_is_still_not_a_complete_parquet_file(tmp_path):  # regression guard
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0]}), str(path))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        sb.read_parquet(str(path), schema=INTS).take_all()
    error = _cause(info.value, FileReadError)
    assert "not a complete parquet file" in str(error)
