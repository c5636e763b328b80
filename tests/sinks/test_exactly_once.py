"""Exactly-once writes whatever changes between a killed run and its resume: the
number of CPUs, the memory budget, partition columns, dead letters; and sinks that
touch only what they own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.manifest import MANIFEST, ManifestWriter, load
from streambatch.connectors.tensors import tensor_array

import streambatch as sb

ROWS = 8000

JOB = textwrap.dedent("""
    import sys, time
    import streambatch as sb

    out, cpus, budget, shape, resume = sys.argv[1:6]
    backend = sys.argv[6] if len(sys.argv) > 6 else "local"

    def slow(batch):
        time.sleep(0.03)
        return {"id": batch["id"], "k": batch["id"] % 3, "v": batch["id"] * 2}

    def check(row):
        if row["id"] % 97 == 0:
            raise ValueError(f"bad row {row['id']}")
        return row

    sb.init(num_cpus=int(cpus), memory_budget=int(budget) * 2**20, backend=backend)
    ds = sb.range(ROWS_N).map_batches(slow, batch_size=100, batch_format="numpy", releases_gil=False)
    if shape == "dead":
        ds = ds.map(check, on_error="skip")
    ds.write_parquet(out, resume=resume == "1",
                     partition_cols=["k"] if shape == "hive" else None)
    if shape == "dead":
        print("DEAD", sorted(int(r.split()[-1].rstrip('"')) for r in
                             [e["error"] for e in ds.dead_letters().to_pylist()]))
""".replace("ROWS_N", str(ROWS)))


def run(tmp_path: Path, out: Path, cpus: int, budget: int, shape: str, resume: bool,
        backend: str = "local"):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return subprocess.Popen([sys.executable, str(script), str(out), str(cpus), str(budget),
                             shape, "1" if resume else "0", backend], stdout=subprocess.PIPE,
                            text=True)


def settled_pieces(out: Path) -> int:
    return sum(len(e["settled"]) for e in load_entries(out) if "settled" in e)


def load_entries(out: Path) -> list[dict]:
    import fsspec

    return load(fsspec.filesystem("file"), str(out)) if out.exists() else []


def kill_mid_job(tmp_path: Path, out: Path, cpus: int, budget: int, shape: str) -> None:
    """Start the job and SIGKILL its driver once something settled, before it ends."""
    job = run(tmp_path, out, cpus, budget, shape, resume=False)
    try:
        deadline = time.monotonic() + 90
        while settled_pieces(out) < 1 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polling for a condition, not asserting on timing
        assert job.poll() is None, "the job ended before it could be killed; make it slower"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    assert not (out / "_SUCCESS").exists()


def resume(tmp_path: Path, out: Path, cpus: int, budget: int, shape: str,
           backend: str = "local") -> str:
    job = run(tmp_path, out, cpus, budget, shape, resume=True, backend=backend)
    stdout, _ = job.communicate(timeout=180)
    assert job.returncode == 0
    return stdout


def data_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*.parquet")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)}


def check_exact_output(out: Path, expected_ids: list[int]) -> None:
    table = pq.read_table(str(out))
    ids = sorted(table["id"].to_pylist())
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicated rows"
    assert ids == expected_ids
    success = json.loads((out / "_SUCCESS").read_text())
    assert {f["path"] for f in success["files"]} == data_files(out)
    assert success["rows"] == len(expected_ids)


@pytest.mark.parametrize("shape", ["plain", "hive"])
def test_resume_with_other_cpus_and_budget_writes_each_row_once(tmp_path, shape):
    out = tmp_path / "out"
    kill_mid_job(tmp_path, out, cpus=2, budget=256, shape=shape)
    resume(tmp_path, out, cpus=3, budget=64, shape=shape)
    check_exact_output(out, list(range(ROWS)))
    if shape == "hive":
        assert {p.split("/")[0] for p in data_files(out)} == {"k=0", "k=1", "k=2"}


def test_a_local_run_resumes_on_ray_writing_each_row_once(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    kill_mid_job(tmp_path, out, cpus=2, budget=256, shape="plain")
    resume(tmp_path, out, cpus=3, budget=128, shape="plain", backend="ray")
    check_exact_output(out, list(range(ROWS)))


@pytest.mark.parametrize("torn", [False, True], ids=["killed_mid_job", "killed_writing_them"])
def test_dead_letters_survive_a_resume(tmp_path, torn):
    out = tmp_path / "out"
    kill_mid_job(tmp_path, out, cpus=2, budget=256, shape="dead")
    if torn:  # what a kill while the first run wrote its dead letters leaves (seed 50064)
        (first_job,) = next(e for e in load_entries(out) if "plan" in e)["jobs"]
        (out / "_errors").mkdir()
        (out / "_errors" / f"dead-letters-{first_job}.parquet").write_bytes(b"PAR1\x15\x04")
    printed = resume(tmp_path, out, cpus=3, budget=128, shape="dead")
    bad = [i for i in range(ROWS) if i % 97 == 0]
    check_exact_output(out, [i for i in range(ROWS) if i % 97])
    written = pq.read_table(str(out / "_errors"))
    assert sorted(json.loads(r)["id"] for r in written["row"].to_pylist()) == bad
    assert f"DEAD {bad}" in printed  # ds.dead_letters() after the resume: all of them


def test_a_manifest_rewrite_that_fails_leaves_the_old_manifest(tmp_path):
    import fsspec

    writer = ManifestWriter(fsspec.filesystem("file"), str(tmp_path))
    writer.rewrite([{"plan": "p", "jobs": ["a"]}, {"settled": [[0, "range", 0, 5]]}])
    with pytest.raises(TypeError):
        writer.rewrite([{"plan": "p"}, {"bad": object()}])  # dies half-way through
    assert load(fsspec.filesystem("file"), str(tmp_path))[1] == {"settled": [[0, "range", 0, 5]]}
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # no temp file left


def test_a_torn_last_manifest_line_does_not_break_resume(tmp_path):
    sb.init(num_cpus=2)
    out = tmp_path / "o"
    sb.range(100).write_parquet(str(out))
    with open(out / MANIFEST, "a") as handle:
        handle.write('{"settled": [[0, "ran')  # a crash mid-append
    sb.range(100).write_parquet(str(out), resume=True)
    assert sorted(pq.read_table(str(out))["id"].to_pylist()) == list(range(100))


def test_overwrite_refuses_to_delete_files_it_did_not_write(tmp_path):
    sb.init(num_cpus=2)
    out = tmp_path / "o"
    sb.range(10).write_parquet(str(out))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        sb.range(5).write_parquet(str(out), mode="overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(r["id"] for r in sb.read_parquet(str(out)).take_all()) == list(range(10))


def test_overwrite_replaces_an_earlier_output_hive_included(tmp_path):
    sb.init(num_cpus=2)
    out = tmp_path / "o"
    rows = [{"k": i % 3, "v": i} for i in range(30)]
    sb.from_items(rows).write_parquet(str(out), partition_cols=["k"])
    files = sb.from_items(rows[:6]).write_parquet(str(out), mode="overwrite",
                                                  partition_cols=["k"])
    assert sorted(r["v"] for r in sb.read_parquet(str(out)).take_all()) == list(range(6))
    assert {os.path.relpath(f["path"], out) for f in files} == data_files(out)


def test_append_keeps_earlier_files_and_lists_them(tmp_path):
    sb.init(num_cpus=2)
    out = tmp_path / "o"
    sb.range(10).write_parquet(str(out))
    files = sb.range(5).write_parquet(str(out), mode="append")
    assert sum(f["rows"] for f in files) == 15
    assert len(pq.read_table(str(out))) == 15
    sb.range(3).write_parquet(str(out), mode="overwrite")  # all three writes were ours
    assert len(pq.read_table(str(out))) == 3


def test_write_images_keeps_subdirectories_and_refuses_duplicate_names(tmp_path):
    sb.init(num_cpus=2)
    images = np.zeros((4, 4, 4, 3), np.uint8)
    names = ["sub/a.png", "a.png", "b.png", "sub/b.png"]
    ds = sb.from_arrow(pa.table({"image": tensor_array(images), "name": names}))
    written = ds.write_images(str(tmp_path / "o"), column="image", filename_column="name")
    assert len(written) == 4
    assert sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*.png")) \
        == sorted(names)
    twice = sb.from_arrow(pa.table({"image": tensor_array(images), "name": ["same.png"] * 4}))
    with pytest.raises(Exception, match="same.png"):
        twice.write_images(str(tmp_path / "o2"), column="image", filename_column="name")
    assert not list((tmp_path / "o2").rglob("*.png"))  # the failed job left nothing
