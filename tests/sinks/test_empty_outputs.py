"""A committed write of no rows reads back as no rows.

``write_parquet`` of no rows commits one file of no rows with the rows' schema (where a
write task saw it), recorded in the manifest as any file is: read back, the columns are
there; an overwrite removes it, an append keeps it, a resume does not add another. A JSON
output (no schema in the format), and a parquet one whose schema no task saw, read as an
empty dataset because ``_SUCCESS`` lists no file. A directory with no data files that no
streambatch write committed empty is still an error."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.manifest import MANIFEST, SUCCESS

import streambatch as sb

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def empty() -> sb.Dataset:
    """No rows, in a block that carries the schema."""
    return sb.from_arrow(SCHEMA.empty_table())


def no_blocks() -> sb.Dataset:
    """No rows and no block at all (a filter that keeps nothing): no schema is known."""
    return sb.range(10).filter(lambda r: r["id"] > 100)


def data_files(out) -> list[str]:
    return sorted(f for f in os.listdir(out) if not f.startswith(("_", ".")))


def manifest_files(out) -> list[str]:
    with open(os.path.join(out, MANIFEST)) as handle:
        return sorted(e["file"] for e in map(json.loads, handle) if "file" in e)


def test_an_empty_parquet_write_reads_back_with_its_columns(tmp_path):
    out = str(tmp_path / "o")
    files = empty().write_parquet(out)
    [name] = data_files(out)
    assert [f["rows"] for f in files] == [0] and manifest_files(out) == [name]
    with open(os.path.join(out, SUCCESS)) as handle:
        assert json.load(handle)["files"][0]["path"] == name
    ds = sb.read_parquet(out)
    assert ds.count() == 0 and ds.schema() == SCHEMA and ds.take_all() == []
    assert pq.read_table(out).schema == SCHEMA  # pyarrow reads it too
    parted = str(tmp_path / "parted")
    empty().write_parquet(parted, partition_cols=["s"])
    assert sb.read_parquet(parted).schema() == SCHEMA


def test_overwrite_append_and_resume_treat_the_empty_file_as_the_outputs_own(tmp_path):
    out = str(tmp_path / "o")
    empty().write_parquet(out)
    empty().write_parquet(out, mode="append")  # the output has a file: no second one
    assert len(data_files(out)) == 1
    rows = sb.from_items([{"id": 1, "s": "a"}, {"id": 2, "s": None}])
    rows.write_parquet(out, mode="append")
    assert sorted(r["id"] for r in sb.read_parquet(out).take_all()) == [1, 2]
    empty().write_parquet(out, mode="overwrite")  # the rows go, the schema comes back
    assert sb.read_parquet(out).count() == 0 and len(data_files(out)) == 1
    rows.write_parquet(out, mode="overwrite")  # recorded: an overwrite removes it
    assert sorted(r["id"] for r in sb.read_parquet(out).take_all()) == [1, 2]
    assert all("schema" not in f for f in data_files(out))
    resumed = str(tmp_path / "resumed")
    empty().write_parquet(resumed, resume=True)
    empty().write_parquet(resumed, resume=True)
    assert len(data_files(resumed)) == 1 and sb.read_parquet(resumed).count() == 0


def test_a_committed_output_of_no_rows_and_no_schema_reads_as_empty(tmp_path):
    for fmt, dataset in (("parquet", no_blocks()), ("json", no_blocks()), ("json", empty())):
        out = str(tmp_path / f"{fmt}-{len(os.listdir(tmp_path))}")
        getattr(dataset, f"write_{fmt}")(out)
        assert data_files(out) == []
        ds = getattr(sb, f"read_{fmt}")(out)
        assert ds.count() == 0 and ds.take_all() == []


def test_a_directory_no_write_committed_empty_is_still_an_error(tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no"):
        sb.read_parquet(str(bare)).count()
    (bare / SUCCESS).write_text("")  # another engine's marker: not a record of no rows
    with pytest.raises(FileNotFoundError, match="holds no"):
        sb.read_json(str(bare)).count()
    (bare / SUCCESS).write_text(json.dumps({"files": [{"path": "gone.json", "rows": 3}],
                                            "rows": 3}))
    with pytest.raises(FileNotFoundError, match="holds no"):
        sb.read_json(str(bare)).count()
    with pytest.raises(FileNotFoundError):
        sb.read_json(str(tmp_path / "missing")).count()


def test_an_append_after_an_empty_write_decides_the_types(tmp_path):
    """The empty write's schema file (int64 'id', string 's') took part in the type check:
    an append of doubles then made the whole output unreadable (its double refused as
    wider than the int64 of a file of no rows). A file of no rows decides no type; its
    columns the others lack stay, as nulls."""
    out = str(tmp_path / "out")
    empty().write_parquet(out)
    sb.from_items([{"id": i + 0.5} for i in range(4)]).write_parquet(out, mode="append")
    back = sb.read_parquet(out)
    assert back.schema().field("id").type == pa.float64()
    assert sorted(r["id"] for r in back.take_all()) == [0.5, 1.5, 2.5, 3.5]
    assert {r["s"] for r in back.take_all()} == {None}
