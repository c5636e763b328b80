"""Every CLI error, run as a user would (a subprocess): one line on stderr naming the
argument or job-file field, what is wrong and what to do; exit 2 for a bad argument,
1 for a failed job; never a traceback."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli.test_cli import cli

MODEL = textwrap.dedent("""
    class Doubler:
        def __call__(self, batch):
            return {"id": batch["id"], "pred": batch["x"] * 2}

    def explode(batch):
        raise RuntimeError("model exploded")
""")


@pytest.fixture()
def ws(tmp_path):
    (tmp_path / "errmodels.py").write_text(MODEL)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "x": [1.0, 2.0, 3.0]}), tmp_path / "in" / "a.parquet")
    return tmp_path


def infer(ws: Path, *extra: str) -> list[str]:
    args = {"--input": str(ws / "in"), "--model": "errmodels:Doubler", "--output": str(ws / "out")}
    for flag, value in zip(extra[::2], extra[1::2], strict=False):
        args[flag] = value
    flat = [part for item in args.items() for part in item if part is not None]
    return ["infer", *flat, "--num-cpus", "1", "--no-progress"]


def assert_one_line(result, code: int, *parts: str) -> None:
    """Exit ``code``; stderr is exactly one line holding every part; no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores modes: /sys then)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for candidate in (locked, Path("/sys")):
        try:
            handle, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(handle)
        os.unlink(probe)
    pytest.skip("no unwritable directory on this machine (root, writable /sys)")


def test_a_column_the_files_lack_exits_2_naming_columns(ws):
    result = cli(ws, *infer(ws, "--columns", "id,nope"))
    assert_one_line(result, 2, "streambatch: error: --columns = ['id', 'nope']: column(s) "
                    "['nope'] not found", "available columns: ['id', 'x']")


def test_a_missing_input_exits_2_naming_input(ws):
    result = cli(ws, *infer(ws, "--input", str(ws / "nope")))
    assert_one_line(result, 2, f"--input = '{ws / 'nope'}'", "no such file or directory",
                    "pass an existing file, directory or glob")


@pytest.mark.parametrize("flag", ["--output", "--trace"])
def test_a_path_below_a_file_exits_2(ws, flag):
    target = str(ws / "in" / "a.parquet" / "below")
    result = cli(ws, *infer(ws, flag, target))
    assert_one_line(result, 2, f"{flag} = '{target}'",
                    f"'{ws / 'in' / 'a.parquet'}' is a file, not a directory")


@pytest.mark.parametrize("flag", ["--output", "--trace"])
def test_an_unwritable_path_exits_2_before_the_job_runs(ws, flag):
    target = str(unwritable_dir(ws) / "x")
    result = cli(ws, *infer(ws, flag, target))
    assert_one_line(result, 2, f"{flag} = '{target}': cannot write in", "choose a writable path")
    assert not (ws / "out").exists()  # refused before anything ran


def test_an_output_that_is_a_file_or_a_trace_that_is_a_directory_exits_2(ws):
    as_file = str(ws / "in" / "a.parquet")
    assert_one_line(cli(ws, *infer(ws, "--output", as_file)), 2,
                    f"--output = '{as_file}' is a file; expected a directory")
    assert_one_line(cli(ws, *infer(ws, "--trace", str(ws / "in"))), 2,
                    f"--trace = '{ws / 'in'}' is a directory; expected a file path")


def test_an_existing_output_names_the_cli_switches(ws):
    result = cli(ws, *infer(ws, "--output", str(ws / "in")))
    assert_one_line(result, 2, f"--output = '{ws / 'in'}' already holds 1 data file(s)",
                    "pass --mode overwrite to replace them, --mode append to add to them, "
                    "--resume to finish an interrupted job, or choose another --output")
    assert "mode='" not in result.stderr and "resume=True" not in result.stderr
    appended = cli(ws, *infer(ws, "--output", str(ws / "in"), "--mode", "append"))
    assert appended.returncode == 0, appended.stderr


def test_bad_flags_exit_2_in_one_line(ws):
    assert_one_line(cli(ws, *infer(ws), "--bogus"), 2,
                    "unrecognized arguments: --bogus; see 'streambatch --help'")
    assert_one_line(cli(ws, "infer", "--output", "o", "--model", "m:M"), 2,
                    "the following arguments are required: --input",
                    "see 'streambatch infer --help'")
    assert_one_line(cli(ws, *infer(ws, "--num-gpus", "-1")), 2,
                    "--num-gpus = -1.0 is not valid: expected a number >= 0")
    assert_one_line(cli(ws, *infer(ws, "--batch-size", "0")), 2,
                    "--batch-size = 0 is not valid: expected an integer >= 1")
    assert_one_line(cli(ws, *infer(ws, "--format", "json"), "--resume"), 2,
                    "--resume needs the parquet format (the output's format is 'json')")
    assert_one_line(cli(ws, *infer(ws, "--address", "auto")), 2,
                    "--address = 'auto' needs --backend = 'ray' (it names a Ray cluster)")
    assert_one_line(cli(ws, *infer(ws, "--memory-budget", "2 gigs")), 2,
                    "--memory-budget = '2 gigs' is not a size; expected e.g. 2GB, 512MiB")


def test_a_failing_model_exits_1_in_one_line_naming_where_it_raised(ws):
    result = cli(ws, *infer(ws, "--model", "errmodels:explode"))
    assert_one_line(result, 1, "streambatch: job failed: stage 'MapBatches(explode)' failed on",
                    "RuntimeError: model exploded (raised at ", "errmodels.py:7 in explode); "
                    "fix the function or its input and run again (STREAMBATCH_TRACEBACK=1 "
                    "prints the worker's traceback)")
    full = cli(ws, *infer(ws, "--model", "errmodels:explode"), env={"STREAMBATCH_TRACEBACK": "1"})
    assert full.returncode == 1 and "Original traceback (from the worker)" in full.stderr


def test_an_input_directory_without_files_exits_2(ws):
    (ws / "empty").mkdir()
    result = cli(ws, *infer(ws, "--input", str(ws / "empty")))
    assert_one_line(result, 2, f"--input = '{ws / 'empty'}': read_parquet: directory",
                    "holds no *.parquet", "pass an existing file, directory or glob")


def job_file(ws: Path, stage: str = "", sink: str = "", execution: str = "") -> Path:
    job = ws / "job.toml"
    job.write_text(textwrap.dedent(f"""
        [source]
        path = "{ws / 'in'}"

        [[stages]]
        fn = "errmodels:Doubler"
        {stage}

        [sink]
        path = "{ws / 'job-out'}"
        {sink}

        [execution]
        num_cpus = 1
        progress = false
        {execution}
    """))
    return job


@pytest.mark.parametrize("where, line, message", [
    ("stage", 'num_gpus = "one"',
     "stages[0].num_gpus = 'one' is not valid: expected a number >= 0, got a string"),
    ("stage", "batch_size = 1.5",
     "stages[0].batch_size = 1.5 is not valid: expected an integer >= 1, got a float"),
    ("stage", 'releases_gil = "yes"',
     "stages[0].releases_gil = 'yes' is not valid: expected a boolean (true or false), "
     "got a string"),
    ("stage", "max_retries = -1",
     "stages[0].max_retries = -1 is not valid: expected an integer >= 0"),
    ("stage", 'constructor_kwargs = "k=3"',
     "stages[0].constructor_kwargs = 'k=3' is not valid: expected a table, got a string"),
    ("stage", 'kind = "map"\nmax_retries = 2',
     'stages[0].max_retries is only for kind = "map_batches"'),
    ("stage", 'batch_format = "arrow"',
     "stages[0].batch_format = 'arrow' is not supported; expected one of: default, numpy, "
     "pyarrow"),
    ("sink", "resume = 1",
     "sink.resume = 1 is not valid: expected a boolean (true or false), got an integer"),
    ("sink", 'mode = "replace"',
     "sink.mode = 'replace' is not supported; expected one of: error, overwrite, append"),
    ("execution", 'memory_budget = "lots"',
     "execution.memory_budget = 'lots' is not a size; expected e.g. 2GB"),
    ("execution", "preserve_order = 1",
     "execution.preserve_order = 1 is not valid: expected a boolean (true or false)"),
    ("execution", 'trace = ["t.json"]',
     "execution.trace = ['t.json'] is not valid: expected a non-empty string, got an array"),
])
def test_job_file_fields_are_type_checked(ws, where, line, message):
    result = cli(ws, "run", str(job_file(ws, **{where: line})))
    assert_one_line(result, 2, f"streambatch: error: {message}")


def test_a_job_file_sets_releases_gil_and_max_retries(ws):
    job = job_file(ws, stage="releases_gil = true\nmax_retries = 2")
    result = cli(ws, "run", str(job))
    assert result.returncode == 0, result.stderr
    assert sorted(pq.read_table(ws / "job-out")["pred"].to_pylist()) == [2.0, 4.0, 6.0]
    explained = cli(ws, "explain", str(job))
    assert explained.returncode == 0, explained.stderr
    assert "MapBatches(Doubler) (tasks on thread workers" in explained.stdout


def test_a_job_file_stage_gets_numpy_batches_as_infer_does(ws):
    result = cli(ws, "run", str(job_file(ws)))  # no batch_format; the model does batch["x"] * 2
    assert result.returncode == 0, result.stderr
    assert sorted(pq.read_table(ws / "job-out")["pred"].to_pylist()) == [2.0, 4.0, 6.0]


def test_a_job_files_existing_output_names_the_job_fields(ws):
    job = job_file(ws)
    assert cli(ws, "run", str(job)).returncode == 0
    again = cli(ws, "run", str(job))
    assert_one_line(again, 2, f"sink.path = '{ws / 'job-out'}' already holds 1 data file(s)",
                    'set sink.mode = "overwrite" to replace them, sink.mode = "append" to add '
                    "to them, sink.resume = true to finish an interrupted job, or change "
                    "sink.path")


def test_an_unexpected_error_is_one_line_with_exit_1(ws, monkeypatch, capsys):
    # Not reachable from the shell on purpose (every known failure has its own message):
    # an OSError while the job runs stands for any unforeseen one.
    import streambatch.job
    from streambatch.cli import main

    def fail(spec):
        raise PermissionError(13, "Permission denied", "/data/out/part-0.parquet")

    monkeypatch.setattr(streambatch.job, "run", fail)
    assert main(infer(ws)) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("streambatch: job failed: PermissionError: [Errno 13] Permission denied: "
                   "'/data/out/part-0.parquet' (set STREAMBATCH_TRACEBACK=1 for the traceback)")


def test_a_csv_column_the_files_lack_exits_2_naming_the_field(ws):
    (ws / "csv").mkdir()
    (ws / "csv" / "a.csv").write_text("id,x\n1,2.0\n")
    job = job_file(ws)
    job.write_text(job.read_text().replace(f'path = "{ws / "in"}"',
                                           f'path = "{ws / "csv"}"\nformat = "csv"\n'
                                           'columns = ["id", "nope"]'))
    result = cli(ws, "run", str(job))
    assert_one_line(result, 2, f"source.columns = ['id', 'nope']: column(s) ['nope'] not found "
                    f"in '{ws / 'csv'}'; available columns: ['id', 'x']")
