"""What the write modes do to an output that is not simply complete or empty.

- ``mode="ignore"`` skips only a complete output: an interrupted write (no ``_SUCCESS``,
  files recorded in the manifest or left unrecorded by a kill) is refused, as append
  refuses it, naming ``resume=True`` where the format has it and ``mode='overwrite'``.
- A failed append leaves the earlier complete output as it was, ``_SUCCESS`` included.
- A driver killed during an append leaves an interrupted write that ``resume=True``
  finishes: the earlier rows and the appended ones, each once.

The driver kills are deterministic: the job's UDF counts its calls in a file; the call
after the Nth waits until the manifest records two files, then SIGKILLs the driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.csv import CSVSink
from streambatch.connectors.datasink import FileDatasink, OutputExistsError
from streambatch.connectors.manifest import MANIFEST, SUCCESS
from streambatch.connectors.parquet_sink import ParquetSink

import streambatch as sb

ROWS = 2000
BLOCKS = 20

JOB = textwrap.dedent("""
    import fcntl, json, os, signal, sys, time
    import streambatch as sb

    out, mode, resume, kill_after, offset, fmt = sys.argv[1:7]
    kill_after, offset = int(kill_after), int(offset)
    os.environ["SB_TEST_DRIVER"] = str(os.getpid())   # the workers inherit it

    def recorded_files():
        try:
            with open(os.path.join(out, "_manifest.jsonl")) as handle:
                return sum('"file"' in line for line in handle)
        except FileNotFoundError:
            return 0

    def calls_so_far():
        with open(out + ".calls", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write("x")
            handle.flush()
            return os.path.getsize(out + ".calls")

    def step(batch):
        if kill_after and calls_so_far() > kill_after:
            deadline = time.monotonic() + 60
            while recorded_files() < 2 and time.monotonic() < deadline:
                time.sleep(0.01)   # the first calls' files are being committed
            os.kill(int(os.environ["SB_TEST_DRIVER"]), signal.SIGKILL)
            os._exit(1)
        return {"id": batch["id"] + offset}

    sb.init(num_cpus=2, progress=False)
    ds = sb.range(ROWS_N, override_num_blocks=BLOCKS_N).map_batches(
        step, batch_size=ROWS_N // BLOCKS_N, releases_gil=False)
    files = getattr(ds, "write_" + fmt)(out, mode=mode, resume=resume == "1")
    print(json.dumps({"files": len(files)}))
""").replace("ROWS_N", str(ROWS)).replace("BLOCKS_N", str(BLOCKS))


def run_job(tmp_path: Path, out: Path, mode: str = "append", resume: bool = False,
            kill_after: int = 0, offset: int = 0, fmt: str = "parquet"
            ) -> subprocess.CompletedProcess:
    """Run the job in a new interpreter; with ``kill_after`` it kills its own driver."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return subprocess.run([sys.executable, str(script), str(out), mode, "1" if resume else "0",
                           str(kill_after), str(offset), fmt], capture_output=True, text=True,
                          timeout=240)


def ids(out: Path, fmt: str = "parquet") -> list[int]:
    """Every id in the output's data files, sorted (read without streambatch)."""
    if fmt == "parquet":
        return sorted(pq.read_table(str(out))["id"].to_pylist())
    files = [out / name for name in data_files(out)]
    if fmt == "json":
        return sorted(json.loads(line)["id"] for f in files for line in open(f) if line.strip())
    import pyarrow.csv as pacsv
    return sorted(i for f in files for i in pacsv.read_csv(f)["id"].to_pylist())


def data_files(out: Path) -> set[str]:
    """The output's data files, relative (what readers read)."""
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
            and not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)}


def kill_mid_write(tmp_path: Path, out: Path, offset: int = 0, fmt: str = "parquet") -> None:
    """A write whose driver dies after two files were recorded, before it ends."""
    killed = run_job(tmp_path, out, kill_after=6, offset=offset, fmt=fmt)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / SUCCESS).exists()


class Ctx:
    """A write task's context, for a sink driven by hand."""

    task_index, key = 0, "k0"


def interrupted_by_hand(sink: FileDatasink, record: bool) -> None:
    """A first write whose driver dies after a task committed a file, with (``record``)
    or without (the kill came before the driver's manifest line) its manifest entry."""
    sink.start()
    result = sink.write([pa.table({"id": [0, 1]})], Ctx())
    if record:
        sink.manifest.append({"file": sink.out.rel(result["path"][0].as_py()), "rows": 2,
                              "bytes": 1, "origins": [], "job": sink.job})


# ---- mode="ignore" on an interrupted write ---------------------------------------------------

def test_ignore_refuses_a_killed_write_and_resume_finishes_it(tmp_path):
    out = tmp_path / "out"
    kill_mid_write(tmp_path, out)
    partial = ids(out)
    assert 0 < len(partial) < ROWS

    ignored = run_job(tmp_path, out, mode="ignore")
    assert ignored.returncode != 0
    assert "mode='ignore' skips only a complete output" in ignored.stderr
    assert "resume=True" in ignored.stderr and "mode='overwrite'" in ignored.stderr
    assert ids(out) == partial  # refused: nothing added, nothing removed

    resumed = run_job(tmp_path, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ids(out) == list(range(ROWS))
    assert run_job(tmp_path, out, mode="ignore").returncode == 0  # complete now: skipped
    assert ids(out) == list(range(ROWS))


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "unrecorded"])
def test_ignore_and_append_refuse_a_write_killed_after_a_commit(tmp_path, record):
    """Unrecorded: a task renamed its file, then the driver died before the manifest line;
    the file is still the interrupted write's (named after its run)."""
    out = tmp_path / "out"
    interrupted_by_hand(ParquetSink(str(out)), record)
    for mode in ("ignore", "append"):
        with pytest.raises(OutputExistsError, match="interrupted write.*resume=True.*"
                                                    "mode='overwrite'"):
            sb.range(5).write_parquet(str(out), mode=mode)
    assert ids(out) == [0, 1]
    sb.range(5).write_parquet(str(out), mode="overwrite")
    assert ids(out) == list(range(5))
    assert (out / SUCCESS).exists()


def test_ignore_on_an_interrupted_csv_write_names_resume_and_overwrite(tmp_path):
    out = tmp_path / "out"
    interrupted_by_hand(CSVSink(str(out)), record=True)
    with pytest.raises(OutputExistsError, match="resume=True to finish it, mode='overwrite'"):
        sb.range(5).write_csv(str(out), mode="ignore")
    assert sum(f["rows"] for f in sb.range(5).write_csv(str(out), mode="overwrite")) == 5


def test_ignore_still_skips_files_no_streambatch_write_recorded(tmp_path):
    """As Ray: a folder of someone else's data files (no manifest) is an output; skip it."""
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": [7]}), str(out / "theirs.parquet"))
    assert sb.range(3).write_parquet(str(out), mode="ignore") == []
    assert ids(out) == [7]


# ---- a failed append ---------------------------------------------------------------------------

def fail_at_150(row: dict) -> dict:
    """A UDF that fails on one row."""
    if row["id"] == 150:
        raise ValueError("boom")
    return row


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_failed_append_keeps_the_earlier_output_complete(tmp_path, fmt):
    out = tmp_path / "out"
    write = getattr(sb.range(100), f"write_{fmt}")
    write(str(out))
    success = (out / SUCCESS).read_text()
    before = data_files(out)

    with pytest.raises(ValueError, match="boom"):
        getattr(sb.range(200, override_num_blocks=4).map(fail_at_150), f"write_{fmt}")(str(out))
    assert data_files(out) == before
    assert (out / SUCCESS).read_text() == success  # complete, as before the append

    assert getattr(sb.range(5), f"write_{fmt}")(str(out), mode="ignore") == []
    files = getattr(sb.range(100), f"write_{fmt}")(str(out))  # append goes on
    assert sum(f["rows"] for f in files) == 200  # the earlier files and the new ones
    assert json.loads((out / SUCCESS).read_text())["rows"] == 200


def test_a_failed_append_gives_back_a_success_it_did_not_write(tmp_path):
    """Another engine's empty _SUCCESS over its own files is put back as it was."""
    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"id": [7]}), str(out / "part-00000.parquet"))
    (out / SUCCESS).write_text("")
    with pytest.raises(ValueError, match="boom"):
        sb.range(200).map(fail_at_150).write_parquet(str(out))
    assert sorted(os.listdir(out)) == [SUCCESS, "part-00000.parquet"]
    assert (out / SUCCESS).read_text() == ""


def test_a_failed_first_write_and_a_failed_overwrite_leave_no_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="boom"):
        sb.range(200).map(fail_at_150).write_parquet(str(out))
    assert not (out / SUCCESS).exists()
    sb.range(10).write_parquet(str(out))
    with pytest.raises(ValueError, match="boom"):
        sb.range(200).map(fail_at_150).write_parquet(str(out), mode="overwrite")
    assert not (out / SUCCESS).exists()  # the earlier output was replaced at the start


# ---- a driver killed during an append -----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "json", pytest.param("csv", marks=pytest.mark.slow)])
def test_a_killed_append_is_interrupted_and_resume_finishes_it(tmp_path, fmt):
    """(write_json and write_csv had no resume=: the refusal's only way on was an
    overwrite, which deleted the earlier, complete output too.)"""
    out = tmp_path / "out"
    first = run_job(tmp_path, out, fmt=fmt)
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = data_files(out)
    kill_mid_write(tmp_path, out, offset=ROWS, fmt=fmt)
    assert earlier < data_files(out)  # the earlier files, and some of the append's
    assert json.loads((out / MANIFEST).read_text().splitlines()[0])["jobs"]

    for mode in ("append", "ignore"):
        refused = run_job(tmp_path, out, mode=mode, offset=ROWS, fmt=fmt)
        assert refused.returncode != 0 and "interrupted write" in refused.stderr
        assert "resume=True" in refused.stderr

    resumed = run_job(tmp_path, out, resume=True, offset=ROWS, fmt=fmt)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ids(out, fmt) == list(range(2 * ROWS))
    success = json.loads((out / SUCCESS).read_text())
    assert {f["path"] for f in success["files"]} == data_files(out)
    assert success["rows"] == 2 * ROWS
