"""The ``streambatch`` command, run as a user would: real subprocesses, exit codes, outputs."""

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

MODEL = textwrap.dedent("""
    import os, time

    class Doubler:
        def __init__(self, k=2):
            self.k = k

        def __call__(self, batch):
            if os.environ.get("SLOW_MODEL"):
                time.sleep(0.2)
            return {"id": batch["id"], "pred": batch["x"] * self.k}

    def prep(batch):
        return {"id": batch["id"], "x": batch["x"] + 1}
""")


@pytest.fixture()
def workspace(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODEL)
    data = tmp_path / "in"
    data.mkdir()
    for i in range(20):  # one read task per file: many tasks, so a run can be interrupted
        ids = np.arange(i * 50, (i + 1) * 50)
        pq.write_table(pa.table({"id": ids, "x": ids * 1.0}), data / f"f{i:02d}.parquet")
    return tmp_path


def cli(workspace: Path, *args, env=None, wait=True):
    environment = dict(os.environ, PYTHONPATH=str(workspace), **(env or {}))
    command = [sys.executable, "-m", "streambatch", *args]
    if not wait:
        return subprocess.Popen(command, env=environment, cwd=workspace,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, env=environment, cwd=workspace, capture_output=True,
                          text=True, timeout=240)


def infer_args(ws: Path, out: str = "out") -> list[str]:
    return ["infer", "--input", str(ws / "in"), "--model", "mymodels:Doubler", "--preprocess",
            "mymodels:prep", "--output", str(ws / out), "--num-cpus", "2", "--concurrency", "1,2",
            "--batch-size", "50"]


def expected_predictions() -> list:
    return [(i, (i + 1.0) * 2) for i in range(1000)]


def test_infer_writes_predictions_and_prints_a_summary(workspace):
    result = cli(workspace, *infer_args(workspace))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(workspace / "out")
    assert sorted(zip(table["id"].to_pylist(), table["pred"].to_pylist(), strict=True)) == \
        expected_predictions()
    assert "done: 1,000 rows" in result.stdout
    assert "MapBatches(Doubler)" in result.stdout


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_killed_cli_resumes_to_the_same_output(workspace, sig, code):
    job = cli(workspace, *infer_args(workspace), env={"SLOW_MODEL": "1"}, wait=False)
    manifest = workspace / "out" / "_manifest.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and job.poll() is None:
        if manifest.exists() and manifest.read_text().count('"settled"') >= 2:
            break
        time.sleep(0.05)  # waiting for a condition, not asserting on time
    assert job.poll() is None, "the job ended before it could be interrupted"
    job.send_signal(sig)  # Ctrl-C (clean stop) or kill -9 (no chance to clean up)
    assert job.wait(timeout=60) == code
    assert not (workspace / "out" / "_SUCCESS").exists()
    resumed = cli(workspace, *infer_args(workspace), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    table = pq.read_table(workspace / "out")
    assert sorted(zip(table["id"].to_pylist(), table["pred"].to_pylist(), strict=True)) == \
        expected_predictions()


@pytest.mark.parametrize("args, message", [
    (["infer", "--input", "in", "--output", "o"], "required: --model"),
    (["infer", "--input", "in", "--output", "o", "--model", "mymodels:Nope"],
     "module 'mymodels' has no attribute 'Nope'"),
    (["infer", "--input", "in", "--output", "o", "--model", "nomodule:X"],
     "cannot import 'nomodule'"),
    (["infer", "--input", "in", "--output", "o", "--model", "mymodels:Doubler",
      "--concurrency", "0"], "--concurrency = '0' is not valid"),
    (["infer", "--input", "in", "--output", "o", "--model", "mymodels:Doubler",
      "--memory-budget", "lots"], "--memory-budget = 'lots' is not a size"),
    (["infer", "--input", "in", "--output", "o", "--model", "mymodels:Doubler",
      "--format", "xml"], "--format = 'xml' is not supported"),
    (["infer", "--input", "in", "--output", "o", "--model", "mymodels:Doubler",
      "--backend", "spark"], "invalid choice: 'spark'"),
    (["run", "missing.toml"], "job file 'missing.toml' does not exist"),
])
def test_bad_arguments_exit_2_naming_what_is_wrong(workspace, args, message):
    result = cli(workspace, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_job_file_runs_and_a_typo_is_named(workspace):
    job = workspace / "job.toml"
    job.write_text(textwrap.dedent(f"""
        [source]
        path = "{workspace / 'in'}"

        [[stages]]
        fn = "mymodels:prep"
        batch_format = "numpy"

        [[stages]]
        fn = "mymodels:Doubler"
        batch_format = "numpy"
        constructor_args = [3]
        concurrency = [1, 1]

        [sink]
        path = "{workspace / 'job-out'}"
        format = "json"

        [execution]
        num_cpus = 2
        memory_budget = "256MiB"
    """))
    result = cli(workspace, "run", str(job))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for f in sorted((workspace / "job-out").glob("part-*"))
            for line in f.read_text().splitlines() if line.strip()] if \
        any((workspace / "job-out").glob("part-*.json")) else None
    if rows is not None:
        assert sorted((r["id"], r["pred"]) for r in rows) == \
            [(i, (i + 1.0) * 3) for i in range(1000)]
    explained = cli(workspace, "explain", str(job))
    assert explained.returncode == 0 and "Physical plan" in explained.stdout
    job.write_text(job.read_text().replace("batch_format", "batch_fromat"))
    typo = cli(workspace, "run", str(job))
    assert typo.returncode == 2
    assert "unknown field 'stages[0].batch_fromat' (did you mean 'batch_format'?)" in typo.stderr


def test_a_failing_model_exits_1_naming_the_stage(workspace):
    (workspace / "broken.py").write_text("def fail(batch):\n    raise ValueError('bad batch')\n")
    result = cli(workspace, "infer", "--input", str(workspace / "in"), "--model", "broken:fail",
                 "--output", str(workspace / "o"), "--num-cpus", "2", "--no-progress")
    assert result.returncode == 1
    assert "MapBatches(fail)" in result.stderr and "ValueError: bad batch" in result.stderr


def test_the_write_stage_reports_rows_written_and_files(workspace):
    args = [a for a in infer_args(workspace) if a != "--no-progress"] + ["--columns", "id,x"]
    result = cli(workspace, *args)
    assert result.returncode == 0, result.stderr
    report = result.stdout + result.stderr
    files = len(list((workspace / "out").glob("part-*")))
    plural = "" if files == 1 else "s"
    assert f"Write[Parquet]: done, 1,000 rows, {files} file{plural}, " in report
    table_row = next(line for line in result.stdout.splitlines()
                     if line.startswith("Write[Parquet]"))
    assert table_row.split()[:4] == ["Write[Parquet]", f"({files}", f"file{plural})", "1,000"]
    # the read of one row that checks --columns is not a run of its own in the report
    assert "limit=1" not in report and "early stop" not in report, report


def test_mode_ignore_on_a_complete_output_skips_the_job(workspace):
    """A second run with --mode ignore failed (exit 1, AttributeError: nothing ran, so
    there were no stats to print); it exits 0 saying it skipped, the output intact."""
    assert cli(workspace, *infer_args(workspace)).returncode == 0
    again = cli(workspace, *infer_args(workspace), "--mode", "ignore")
    assert again.returncode == 0, again.stderr
    assert "skipped:" in again.stdout and "nothing was written" in again.stdout
    table = pq.read_table(workspace / "out")
    assert sorted(zip(table["id"].to_pylist(), table["pred"].to_pylist(), strict=True)) == \
        expected_predictions()
