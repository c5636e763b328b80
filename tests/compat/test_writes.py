"""Ray Data's writes as its documentation and tests describe them, with only the import
changed: ``num_rows_per_file``; a directory that already holds files gets more files
(``mode`` defaults to append; error / ignore / overwrite as Ray's SaveMode); ``write_json``
writes ``.json`` files of JSON lines; ``write_datasink`` with a user ``Datasink``
(``on_write_start``, ``write(blocks, ctx)``, ``on_write_complete(write_result)``,
``on_write_failed(error)``). Files are read back with pyarrow / json, not our readers.
Where we keep exactly-once on purpose: appending onto an interrupted write is refused."""

from __future__ import annotations

import csv
import enum
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.manifest import MANIFEST, SUCCESS
from streambatch.connectors.parquet_sink import ParquetSink

import streambatch as sb


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def data_files(out: Path, suffix: str) -> list[Path]:
    return sorted(p for p in out.rglob(f"*{suffix}")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(out).parts))


def parquet_ids(out: Path) -> list[int]:
    return sorted(i for f in data_files(out, ".parquet")
                  for i in pq.read_table(f).column("id").to_pylist())


# ---- num_rows_per_file ------------------------------------------------------------------

def test_num_rows_per_file_parquet_cuts_files_of_that_many_rows(tmp_path):
    out = tmp_path / "out"
    files = sb.range(100, override_num_blocks=1).write_parquet(str(out), num_rows_per_file=30)
    assert sorted(f["rows"] for f in files) == [10, 30, 30, 30]
    on_disk = data_files(out, ".parquet")
    assert sorted(pq.read_metadata(f).num_rows for f in on_disk) == [10, 30, 30, 30]
    assert parquet_ids(out) == list(range(100))


def test_num_rows_per_file_splits_every_partition(tmp_path):
    """Each partition (4 of 25 rows) is cut on its own: its last file is shorter (Ray
    bundles rows across tasks instead; see the README's differences)."""
    out = tmp_path / "out"
    sb.range(100, override_num_blocks=4).write_parquet(str(out), num_rows_per_file=10)
    counts = sorted(pq.read_metadata(f).num_rows for f in data_files(out, ".parquet"))
    assert counts == [5] * 4 + [10] * 8
    assert parquet_ids(out) == list(range(100))


def test_num_rows_per_file_csv_and_json(tmp_path):
    sb.range(25, override_num_blocks=1).write_csv(str(tmp_path / "c"), num_rows_per_file=10)
    csv_files = data_files(tmp_path / "c", ".csv")
    rows = [[int(r["id"]) for r in csv.DictReader(f.open())] for f in csv_files]
    assert sorted(len(r) for r in rows) == [5, 10, 10]
    assert sorted(i for r in rows for i in r) == list(range(25))

    sb.range(25, override_num_blocks=1).write_json(str(tmp_path / "j"), num_rows_per_file=10)
    json_files = data_files(tmp_path / "j", ".json")
    rows = [[json.loads(line)["id"] for line in f.read_text().splitlines()] for f in json_files]
    assert sorted(len(r) for r in rows) == [5, 10, 10]
    assert sorted(i for r in rows for i in r) == list(range(25))


def test_num_rows_per_file_numpy(tmp_path):
    sb.range(7, override_num_blocks=1).write_numpy(str(tmp_path), column="id",
                                                   num_rows_per_file=3)
    arrays = [np.load(f) for f in data_files(tmp_path, ".npy")]
    assert sorted(len(a) for a in arrays) == [1, 3, 3]
    assert sorted(np.concatenate(arrays).tolist()) == list(range(7))


def test_max_rows_per_file_and_ray_only_arguments(tmp_path):
    """Ray's write_parquet(max_rows_per_file=...) caps file sizes; ray_remote_args and
    concurrency are accepted (Ray code runs unchanged) without changing the output."""
    out = tmp_path / "out"
    sb.range(9, override_num_blocks=1).write_parquet(
        str(out), max_rows_per_file=4, ray_remote_args={"num_cpus": 1}, concurrency=2)
    assert sorted(pq.read_metadata(f).num_rows for f in data_files(out, ".parquet")) == [1, 4, 4]
    assert parquet_ids(out) == list(range(9))
    with pytest.raises(ValueError, match="pass one of them"):
        sb.range(9).write_parquet(str(tmp_path / "o2"), max_rows_per_file=4,
                                  num_rows_per_file=5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_num_rows_per_file_rejects_non_positive_ints(tmp_path, bad):
    with pytest.raises(ValueError, match=r"write_parquet: num_rows_per_file=.*positive int"):
        sb.range(3).write_parquet(str(tmp_path / "o"), num_rows_per_file=bad)
    assert not (tmp_path / "o").exists()


# ---- a directory that already holds files (Ray's SaveMode; append by default) --------------

def test_writing_twice_appends_by_default(tmp_path):
    out = tmp_path / "out"
    sb.range(5).write_parquet(str(out))
    sb.from_items([{"id": i} for i in range(5, 8)]).write_parquet(str(out))
    assert parquet_ids(out) == list(range(8))
    success = json.loads((out / SUCCESS).read_text())
    assert success["rows"] == 8  # _SUCCESS lists the earlier files and the new ones
    assert sorted(r["id"] for r in sb.read_parquet(str(out)).take_all()) == list(range(8))


def test_append_into_a_directory_of_foreign_files_keeps_them(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": [100, 101]}), out / "from-elsewhere.parquet")
    files = sb.range(3).write_parquet(str(out))
    assert sum(f["rows"] for f in files) == 3
    assert parquet_ids(out) == [0, 1, 2, 100, 101]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_text_formats_append_by_default(tmp_path, fmt):
    out = tmp_path / "out"
    getattr(sb.range(3), f"write_{fmt}")(str(out))
    getattr(sb.from_items([{"id": 7}]), f"write_{fmt}")(str(out))
    ids = []
    for f in data_files(out, f".{fmt}"):
        if fmt == "csv":
            ids += [int(r["id"]) for r in csv.DictReader(f.open())]
        else:
            ids += [json.loads(line)["id"] for line in f.read_text().splitlines()]
    assert sorted(ids) == [0, 1, 2, 7]


def test_mode_error_raises_a_value_error_naming_the_modes(tmp_path):
    out = tmp_path / "out"
    sb.range(3).write_parquet(str(out))
    with pytest.raises(ValueError, match=r"already holds \d+ data file.*mode='append'"):
        sb.range(3).write_parquet(str(out), mode="error")
    assert parquet_ids(out) == [0, 1, 2]  # untouched
    assert (out / SUCCESS).exists()


def test_mode_ignore_skips_the_write_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    sb.range(3).write_parquet(str(out))

    def explode(row):
        raise AssertionError("mode='ignore' ran the pipeline")

    assert sb.range(3).map(explode).write_parquet(str(out), mode="ignore") == []
    assert parquet_ids(out) == [0, 1, 2]
    # into an empty or missing directory, ignore writes
    files = sb.range(4).write_json(str(tmp_path / "new"), mode="ignore")
    assert sum(f["rows"] for f in files) == 4


def test_mode_overwrite_replaces_an_earlier_output(tmp_path):
    out = tmp_path / "out"
    sb.range(10).write_parquet(str(out))
    sb.from_items([{"id": 42}]).write_parquet(str(out), mode="overwrite")
    assert parquet_ids(out) == [42]


def test_mode_accepts_a_save_mode_enum(tmp_path):
    class SaveMode(str, enum.Enum):  # Ray's ray.data.SaveMode is a str enum of these values
        APPEND = "append"
        IGNORE = "ignore"

    out = tmp_path / "out"
    sb.range(2).write_parquet(str(out), mode=SaveMode.APPEND)
    sb.range(2).write_parquet(str(out), mode=SaveMode.APPEND)
    assert parquet_ids(out) == [0, 0, 1, 1]
    assert sb.range(2).write_parquet(str(out), mode=SaveMode.IGNORE) == []


def test_unknown_mode_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="mode='upsert' is not supported.*'append'"):
        sb.range(2).write_csv(str(tmp_path / "o"), mode="upsert")


def test_append_onto_an_interrupted_write_is_refused(tmp_path):
    """Exactly-once, on purpose unlike Ray: a driver killed mid-write leaves committed
    files and a manifest without _SUCCESS; a plain rerun (append) would write those
    rows twice, so it is refused; overwrite replaces the partial output."""
    out = tmp_path / "out"
    sink = ParquetSink(str(out))
    sink.start()

    class Ctx:
        task_index, key = 0, "k0"

    result = sink.write([pa.table({"id": [0, 1]})], Ctx())
    path = result["path"][0].as_py()
    sink.manifest.append({"file": os.path.relpath(path, out), "rows": 2, "bytes": 1,
                          "origins": [], "job": sink.job})  # ...and the driver dies here
    assert not (out / SUCCESS).exists() and (out / MANIFEST).exists()

    with pytest.raises(FileExistsError, match="interrupted write.*resume=True"):
        sb.range(5).write_parquet(str(out))
    assert parquet_ids(out) == [0, 1]  # nothing added, nothing removed
    sb.range(5).write_parquet(str(out), mode="overwrite")
    assert parquet_ids(out) == list(range(5))


# ---- write_json: .json files of JSON lines ---------------------------------------------------

def test_write_json_writes_json_lines_named_dot_json(tmp_path):
    out = tmp_path / "out"
    sb.from_items([{"a": 1, "b": "x"}, {"a": 2, "b": None}]).write_json(str(out))
    files = data_files(out, ".json")
    assert files and not data_files(out, ".jsonl")
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert sorted(rows, key=lambda r: r["a"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    assert sorted(r["a"] for r in sb.read_json(str(out)).take_all()) == [1, 2]


# ---- write_datasink / Datasink -----------------------------------------------------------------

class CollectIds(sb.Datasink):
    """Ray's test_write_result shape: write returns a value per task."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_write_start(self) -> None:
        self.events.append("start")

    def write(self, blocks, ctx):
        return {"task": ctx.task_idx, "ids": [i for b in blocks for i in b["id"].to_pylist()]}

    def on_write_complete(self, write_result) -> None:
        self.events.append("complete")
        self.result = write_result

    def on_write_failed(self, error: Exception) -> None:
        self.events.append(f"failed: {error}")


def test_write_datasink_calls_the_hooks_with_the_write_result():
    sink = CollectIds()
    ds = sb.range(10, override_num_blocks=2).map(lambda r: {"id": r["id"],
                                                         "data": np.zeros(500, np.int8)})
    assert ds.write_datasink(sink) is None
    assert sink.events == ["start", "complete"]
    result = sink.result
    assert isinstance(result, sb.WriteResult)
    assert result.num_rows == 10
    assert sorted(i for r in result.write_returns for i in r["ids"]) == list(range(10))
    assert sorted(r["task"] for r in result.write_returns) == [0, 1]
    assert result.size_bytes == pytest.approx(10 * 500, rel=0.2)


def test_write_datasink_failure_calls_on_write_failed_and_raises():
    class Failing(CollectIds):
        def write(self, blocks, ctx):
            raise ValueError("the target is down")

    sink = Failing()
    with pytest.raises(Exception, match="the target is down"):
        sb.range(4).write_datasink(sink)
    assert sink.events[0] == "start" and len(sink.events) == 2
    assert sink.events[1].startswith("failed: ") and "the target is down" in sink.events[1]


def test_write_datasink_writes_every_row_once_to_files(tmp_path):
    """A user connector writing files keyed on ctx.key: a retry rewrites the same file."""

    class CSVFiles(sb.Datasink):
        def __init__(self, path: str) -> None:
            self.path = path

        def on_write_start(self) -> None:
            os.makedirs(self.path, exist_ok=True)

        def write(self, blocks, ctx):
            table = pa.concat_tables(list(blocks))
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, os.path.join(self.path, f"{ctx.key or ctx.task_idx}.csv"))
            return table.num_rows

    sink = CSVFiles(str(tmp_path / "o"))
    sb.range(50, override_num_blocks=5).write_datasink(sink)
    ids = [int(r["id"]) for f in data_files(tmp_path / "o", ".csv")
           for r in csv.DictReader(f.open())]
    assert sorted(ids) == list(range(50))


def test_write_datasink_rejects_what_is_not_a_datasink():
    with pytest.raises(TypeError, match="write_datasink: expected an sb.Datasink.*got dict"):
        sb.range(2).write_datasink({})


def test_datasink_without_write_says_what_to_implement():
    class Empty(sb.Datasink):
        pass

    with pytest.raises(Exception, match="Empty must implement write"):
        sb.range(2).write_datasink(Empty())


def test_datasink_name_shows_in_stats():
    class KafkaDatasink(sb.Datasink):
        def write(self, blocks, ctx):
            return sum(b.num_rows for b in blocks)

    ds = sb.range(3)
    ds.write_datasink(KafkaDatasink())
    assert "Write[Kafka]" in str(ds.stats())


def test_on_write_start_with_a_schema_parameter_is_called():
    """Newer Ray declares on_write_start(self, schema); such a sink still runs."""

    class WithSchema(CollectIds):
        def on_write_start(self, schema) -> None:
            self.events.append(f"start {schema}")

    sink = WithSchema()
    sb.range(3).write_datasink(sink)
    assert sink.events == ["start None", "complete"]
    assert sorted(i for r in sink.result.write_returns for i in r["ids"]) == [0, 1, 2]
