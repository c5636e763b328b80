"""Build and run a :class:`~streambatch.jobspec.JobSpec`: the pipeline the CLI runs."""

from __future__ import annotations

import time

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

    >>> spec = JobSpec.from_dict({"source": {"path": "/no/such/dir"}, "sink": {"path": "o"}})
    >>> build(spec)
    Traceback (most recent call last):
    ...
    FileNotFoundError: read_parquet: no such file or directory: '/no/such/dir'
    """
    reader = getattr(sb, f"read_{spec.source['format']}", None)
    if reader is None:
        raise JobSpecError(f"source.format = {spec.source['format']!r} needs a newer streambatch")
    kwargs = {"columns": spec.source["columns"]} if spec.source.get("columns") else {}
    ds = reader(spec.source["path"], **kwargs)
    for index, stage in enumerate(spec.stages):
        ds = _apply(ds, stage, f"stages[{index}].fn")
    return ds


def _apply(ds: sb.Dataset, stage: dict, name: str) -> sb.Dataset:
    fn = load_object(stage["fn"], name)
    kind = stage["kind"]
    if kind != "map_batches":
        return getattr(ds, kind)(fn, on_error=stage.get("on_error", "raise"))
    options = {k: stage[k] for k in ("batch_size", "batch_format", "num_cpus", "num_gpus",
                                     "concurrency", "on_error") if k in stage}
    if "constructor_args" in stage:
        options["fn_constructor_args"] = tuple(stage["constructor_args"])
    if "constructor_kwargs" in stage:
        options["fn_constructor_kwargs"] = dict(stage["constructor_kwargs"])
    return ds.map_batches(fn, **options)


def run(spec: JobSpec) -> dict:
    """Run the job to its sink; return a summary (rows, seconds, files, per-stage stats)."""
    configure(spec)
    ds = build(spec)
    writer = getattr(ds, f"write_{spec.sink['format']}")
    options = {"mode": spec.sink["mode"]} if "mode" in spec.sink else {}
    if spec.sink.get("resume") and spec.sink["format"] == "parquet":
        options["resume"] = True
    start = time.perf_counter()
    files = writer(spec.sink["path"], **options)
    seconds = time.perf_counter() - start
    return {"rows": sum(f["rows"] or 0 for f in files), "seconds": seconds, "files": files,
            "stats": ds.stats(), "errored_rows": len(ds.dead_letters()),
            "output": spec.sink["path"]}


def summary_lines(summary: dict) -> list[str]:
    """The end-of-job table: per stage rows, rows/s, retries, errored rows; then totals."""
    lines = [f"{'stage':<48} {'rows out':>10} {'rows/s':>10} {'tasks':>6} {'retries':>7} "
             f"{'errored':>7}"]
    for st in summary["stats"].stages:
        lines.append(f"{st.name[:48]:<48} {st.rows_out:>10,} {st.rows_per_s:>10,.0f} "
                     f"{st.tasks:>6} {st.retries:>7} {st.errored_rows:>7}")
    lines.append(f"done: {summary['rows']:,} rows in {summary['seconds']:.2f}s "
                 f"({summary['rows'] / max(summary['seconds'], 1e-9):,.0f} rows/s), "
                 f"{len(summary['files'])} output files in {summary['output']}, "
                 f"{summary['errored_rows']} errored rows")
    return lines
