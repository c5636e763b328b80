"""Build and run a :class:`~streambatch.jobspec.JobSpec`: the pipeline the CLI runs."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import streambatch as sb
from streambatch.jobspec import JobSpec, JobSpecError, load_object


def configure(spec: JobSpec) -> None:
    """``streambatch.init`` from the job's [execution] table."""
    ex = spec.execution
    sb.init(num_cpus=ex.get("num_cpus"), num_gpus=ex.get("num_gpus"),
            memory_budget=ex.get("memory_budget"), backend=ex.get("backend", "local"),
            trace=ex.get("trace"), progress=ex.get("progress", True),
            preserve_order=ex.get("preserve_order", False),
            **({"address": ex["address"]} if ex.get("address") else {}))


def build(spec: JobSpec) -> sb.Dataset:
    """The Dataset a job describes (nothing runs yet).

    A source path that does not exist or a column the files lack is a
    :class:`JobSpecError` naming the field (or the CLI flag).

    >>> spec = JobSpec.from_dict({"source": {"path": "/no/such/dir"}, "sink": {"path": "o"}})
    >>> build(spec)
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: source.path = '/no/such/dir': read_parquet: no such file or directory: '/no/such/dir'; pass an existing file, directory or glob
    """
    source = spec.source
    reader = getattr(sb, f"read_{source['format']}", None)
    if reader is None:
        raise JobSpecError(f"source.format = {source['format']!r} needs a newer streambatch")
    columns = source.get("columns")
    pushdown = columns and source["format"] == "parquet"
    try:
        ds = reader(source["path"], **({"columns": columns} if pushdown else {}))
        if pushdown:
            _quiet_schema(ds)  # plans the read: a column the files lack is refused here
    except FileNotFoundError as exc:
        raise _missing_input(spec, exc) from None
    except KeyError as exc:
        detail = str(exc.args[0] if exc.args else exc).split(": ", 1)[-1]
        raise JobSpecError(f"{spec.label('source.columns')} = {columns!r}: {detail}") from None
    if columns and not pushdown:  # other formats: check against the first file's columns
        names = _quiet_schema(ds).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise JobSpecError(f"{spec.label('source.columns')} = {columns!r}: column(s) "
                               f"{missing} not found in {source['path']!r}; available columns: "
                               f"{names}")
        ds = ds.select_columns(columns)
    for index, stage in enumerate(spec.stages):
        ds = _apply(ds, stage, spec.label(f"stages[{index}].fn"))
    return ds


def _quiet_schema(ds: sb.Dataset):
    """``ds.schema()`` (it may read a row) without a progress report of that read."""
    options = sb.DataContext.get_current().execution_options
    shown, options.progress = options.progress, False
    try:
        return ds.schema()
    finally:
        options.progress = shown


def _apply(ds: sb.Dataset, stage: dict, name: str) -> sb.Dataset:
    fn = load_object(stage["fn"], name)
    kind = stage["kind"]
    common = {k: stage[k] for k in ("on_error", "releases_gil") if k in stage}
    if kind != "map_batches":
        return getattr(ds, kind)(fn, **common)
    options = {k: stage[k] for k in ("batch_size", "batch_format", "num_cpus", "num_gpus",
                                     "concurrency", "max_retries") if k in stage}
    if "constructor_args" in stage:
        options["fn_constructor_args"] = tuple(stage["constructor_args"])
    if "constructor_kwargs" in stage:
        options["fn_constructor_kwargs"] = dict(stage["constructor_kwargs"])
    return ds.map_batches(fn, **common, **options)


def check_paths(spec: JobSpec) -> None:
    """Refuse, before anything runs, a local output or trace path that cannot be written
    (a file where a directory must be, no permission, a read-only file system).

    >>> check_paths(JobSpec.from_dict({"source": {"path": "i"}, "sink": {"path": "/proc/version/o"}}))
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: sink.path = '/proc/version/o': '/proc/version' is a file, not a directory; choose another path
    """
    _check_writable(spec.sink["path"], spec.label("sink.path"), directory=True)
    if spec.execution.get("trace"):
        _check_writable(spec.execution["trace"], spec.label("execution.trace"), directory=False)


def _check_writable(path: str, label: str, directory: bool) -> None:
    if "://" in path and not path.startswith("file://"):
        return  # a remote file system: its own errors name the path
    target = Path(path.removeprefix("file://")).absolute()
    if directory and target.exists() and not target.is_dir():
        raise JobSpecError(f"{label} = {path!r} is a file; expected a directory to write into")
    if not directory and target.is_dir():
        raise JobSpecError(f"{label} = {path!r} is a directory; expected a file path")
    folder = target if directory else target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise JobSpecError(f"{label} = {path!r}: {str(folder)!r} is a file, not a directory; "
                           "choose another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".streambatch-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise JobSpecError(f"{label} = {path!r}: cannot write in {str(folder)!r} "
                           f"({exc.strerror or exc}); choose a writable path") from None


def run(spec: JobSpec) -> dict:
    """Run the job to its sink; return a summary (rows, seconds, files, per-stage stats)."""
    check_paths(spec)
    configure(spec)
    ds = build(spec)
    writer = getattr(ds, f"write_{spec.sink['format']}")
    options = {"mode": spec.sink.get("mode", "error")}  # a job refuses existing output
    if spec.sink.get("resume") and spec.sink["format"] == "parquet":
        options["resume"] = True
    start = time.perf_counter()
    try:
        files = writer(spec.sink["path"], **options)
    except FileExistsError as exc:
        raise JobSpecError(_exists_message(spec, str(exc))) from None
    except FileNotFoundError as exc:  # the read found no files when it planned its tasks
        if not str(exc).startswith("read_"):
            raise
        raise _missing_input(spec, exc) from None
    seconds = time.perf_counter() - start
    return {"rows": sum(f["rows"] or 0 for f in files), "seconds": seconds, "files": files,
            "stats": ds.stats(), "errored_rows": len(ds.dead_letters()),
            "output": spec.sink["path"]}


def _missing_input(spec: JobSpec, exc: FileNotFoundError) -> JobSpecError:
    return JobSpecError(f"{spec.label('source.path')} = {spec.source['path']!r}: {exc}; pass an "
                        "existing file, directory or glob")


def _exists_message(spec: JobSpec, message: str) -> str:
    """The sink's refusal of an existing output, with the CLI's or the job file's switches.

    >>> spec = JobSpec.from_dict({"source": {"path": "i"}, "sink": {"path": "o"}},
    ...                          flags={"sink.path": "--output", "sink.mode": "--mode",
    ...                                 "sink.resume": "--resume"})
    >>> _exists_message(spec, "write_parquet: 'o' already holds 1 data file(s), e.g. 'a'; "
    ...                 "pass mode='overwrite'")
    "--output = 'o' already holds 1 data file(s), e.g. 'a'; pass --mode overwrite to replace them, --mode append to add to them, --resume to finish an interrupted job, or choose another --output"
    >>> _exists_message(spec, "write_parquet: 'o' holds the files of an interrupted write "
    ...                 "(no _SUCCESS); pass resume=True")
    "--output = 'o' holds the files of an interrupted write (no _SUCCESS); pass --resume to finish it, --mode overwrite to replace it, or choose another --output"
    """
    label = spec.label("sink.path")
    text = re.sub(r"^'[^']*' ", "", message.split(": ", 1)[-1])
    switch = re.search(r"[;.] [Pp]ass ", text)
    if switch is None:
        return f"{label} = {spec.sink['path']!r}: {text}"
    if "interrupted" in text[:switch.start()]:  # append refuses it too: no append hint
        hint = ("set sink.resume = true to finish it, sink.mode = \"overwrite\" to replace "
                "it, or change sink.path" if label == "sink.path" else
                f"pass {spec.label('sink.resume')} to finish it, {spec.label('sink.mode')} "
                f"overwrite to replace it, or choose another {label}")
    elif label == "sink.path":
        hint = ('set sink.mode = "overwrite" to replace them, sink.mode = "append" to add to '
                "them, sink.resume = true to finish an interrupted job, or change sink.path")
    else:
        hint = (f"pass {spec.label('sink.mode')} overwrite to replace them, "
                f"{spec.label('sink.mode')} append to add to them, {spec.label('sink.resume')} "
                f"to finish an interrupted job, or choose another {label}")
    mode = spec.label("sink.mode")
    head = re.sub(r"mode='(\w+)'", (r'sink.mode = "\1"' if mode == "sink.mode" else
                                     mode + r" \1"), text[:switch.start()])
    return f"{label} = {spec.sink['path']!r} {head}; {hint}"


def summary_lines(summary: dict) -> list[str]:
    """The end-of-job table: per stage rows, rows/s, retries, errored rows; then totals.

    A write stage's output is one record per file: its row shows the rows written (the
    job's total) and the files.

    >>> from streambatch.executor.stats import DatasetStats, StageStats
    >>> stats = DatasetStats([StageStats("Read[Parquet]", rows_out=3000, tasks=4, wall_time_s=2.0),
    ...                       StageStats("Write[Parquet]", rows_in=3000, rows_out=4, tasks=4,
    ...                                  wall_time_s=2.0)], 2.0, 0, 0)
    >>> lines = summary_lines({"stats": stats, "rows": 3000, "seconds": 2.0, "files": [{}] * 4,
    ...                        "errored_rows": 0, "output": "out"})
    >>> print("\\n".join(lines))
    stage                                              rows out     rows/s  tasks retries errored
    Read[Parquet]                                         3,000      1,500      4       0       0
    Write[Parquet] (4 files)                              3,000      1,500      4       0       0
    done: 3,000 rows in 2.00s (1,500 rows/s), 4 output files in out, 0 errored rows
    >>> summary_lines({"stats": None, "output": "out"})
    ["skipped: out holds a complete output (mode 'ignore'); nothing was written"]
    """
    if summary["stats"] is None:  # mode="ignore" found a complete output: nothing ran
        return [f"skipped: {summary['output']} holds a complete output (mode 'ignore'); "
                "nothing was written"]
    lines = [f"{'stage':<48} {'rows out':>10} {'rows/s':>10} {'tasks':>6} {'retries':>7} "
             f"{'errored':>7}"]
    for st in summary["stats"].stages:
        name, rows, rate = st.name, st.rows_out, st.rows_per_s
        if name.rsplit("->", 1)[-1].startswith("Write["):
            rows = summary["rows"]
            rate = rows / st.wall_time_s if st.wall_time_s else 0.0
            files = f" ({st.rows_out:,} file{'' if st.rows_out == 1 else 's'})"
            name = name[:48 - len(files)] + files
        lines.append(f"{name[:48]:<48} {rows:>10,} {rate:>10,.0f} "
                     f"{st.tasks:>6} {st.retries:>7} {st.errored_rows:>7}")
    lines.append(f"done: {summary['rows']:,} rows in {summary['seconds']:.2f}s "
                 f"({summary['rows'] / max(summary['seconds'], 1e-9):,.0f} rows/s), "
                 f"{len(summary['files'])} output files in {summary['output']}, "
                 f"{summary['errored_rows']} errored rows")
    return lines
