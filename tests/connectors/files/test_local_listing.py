"""The local directory walk lists what fsspec's find lists, with sizes (and follows a
link to a directory)."""

from __future__ import annotations

import os

import fsspec
from streambatch.connectors.paths import find_sizes


def test_local_walk_matches_fsspec_find(tmp_path):
    (tmp_path / "k=1" / "deep").mkdir(parents=True)
    (tmp_path / "_meta").mkdir()
    files = {"a.parquet": 3, "k=1/b.parquet": 5, "k=1/deep/c.csv": 7, ".hidden": 1,
             "_meta/d": 2}
    for name, size in files.items():
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "e.parquet").write_bytes(b"y" * 11)
    os.symlink(tmp_path / "elsewhere", tmp_path / "k=1" / "linked")
    os.symlink(tmp_path / "a.parquet", tmp_path / "alias.parquet")

    fs = fsspec.filesystem("file")
    base = str(tmp_path)
    want = {p: int(i["size"]) for p, i in fs.find(base, detail=True).items()}
    # fsspec lists the link to a directory as one file; the walk reads the files in it
    del want[f"{base}/k=1/linked"]
    want[f"{base}/k=1/linked/e.parquet"] = 11
    got = find_sizes(fs, base)
    assert got == want
    assert got[f"{base}/alias.parquet"] == 3
    assert got[f"{base}/k=1/deep/c.csv"] == 7 and len(got) == 8
