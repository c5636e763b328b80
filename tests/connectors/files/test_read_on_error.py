"""Reads with on_error: "raise" (default) names the bad file; "skip" reads past it
and records its path and error in the dead letters — nothing dropped silently."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.file_based import FileReadError

import streambatch as sb


def _dead_paths(ds) -> list[str]:
    return sorted(json.loads(r)["path"] for r in ds.dead_letters().column("row").to_pylist())


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / f"ok{i}.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    return tmp_path


def test_images_raise_names_the_corrupt_file(images):
    with pytest.raises(sb.UserCodeError, match=r"read_images: cannot read .*bad\.png"):
        sb.read_images(str(images)).take_all()


def test_images_skip_records_the_corrupt_file(images):
    ds = sb.read_images(str(images), on_error="skip", include_paths=True)
    rows = ds.take_all()
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == ["ok0.png", "ok1.png", "ok2.png"]
    dead = ds.dead_letters()
    assert _dead_paths(ds) == [str(images / "bad.png")]
    assert "bad.png" in dead.column("where")[0].as_py()
    assert "cannot identify image" in dead.column("error")[0].as_py()


@pytest.mark.parametrize("files", [4, 24])  # footers read while planning / by the tasks
@pytest.mark.parametrize("query", [{}, {"columns": ["id"], "filter": pc.field("id") >= 0}])
def test_parquet_skip_reads_past_a_corrupt_file(tmp_path, files, query):
    for i in range(files):
        pq.write_table(pa.table({"id": [i * 10 + j for j in range(10)]}),
                       str(tmp_path / f"p{i:02d}.parquet"))
    bad = tmp_path / "p01.parquet"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: no footer
    with pytest.raises((sb.UserCodeError, FileReadError), match=r"p01\.parquet"):  # planning or task
        sb.read_parquet(str(tmp_path), **query).take_all()
    ds = sb.read_parquet(str(tmp_path), on_error="skip", **query)
    ids = sorted(r["id"] for r in ds.take_all())
    assert ids == [i * 10 + j for i in range(files) if i != 1 for j in range(10)]
    assert _dead_paths(ds) == [str(bad)]


def test_csv_skip_keeps_other_files_and_counts_toward_max_errored_rows(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,a\n2,b\n")
    (tmp_path / "b.csv").write_text("x,y\n3,c,extra,columns\n")
    (tmp_path / "c.csv").write_text("x,y\n4,d\n")
    ds = sb.read_csv(str(tmp_path), on_error="skip")
    assert sorted(r["x"] for r in ds.take_all()) == [1, 2, 4]
    assert _dead_paths(ds) == [str(tmp_path / "b.csv")]
    with pytest.raises(ValueError, match="on_error='ignore'"):
        sb.read_csv(str(tmp_path), on_error="ignore")
