"""One generated pipeline (executor/sim_workloads.py) run for real, in a fresh process:
the job of ``_sweep_real.py`` (not a test, not a benchmark of its own).

    python benchmarks/_sweep_real_job.py PARAMS.json RESULT.json

PARAMS (written by ``_sweep_real.job_params``): ``engine`` ("streambatch" or "ray"),
the machine (``num_cpus``, ``num_gpus``, ``budget``: bytes or None for the engine's
default), the source (``read_tasks`` tasks of ``rows_per_task`` rows, ``seconds_per_row``,
``bytes_per_row``) and the stages (``seconds_per_row``, ``bytes_per_row`` of their
output, ``batch_rows``, ``num_cpus``, ``num_gpus``, ``actors`` = (min, max) or None,
``startup_s``).

The source is a Datasource of exactly ``read_tasks`` ReadTasks; each makes its rows in
chunks of at most ~50 ms of work, sleeping until ``rows * seconds_per_row`` after its
start before it yields each chunk. A stage is ``map_batches(udf, batch_size=...,
batch_format="pyarrow", num_cpus=..., num_gpus=..., concurrency=...)``; its UDF makes
the output rows, then sleeps until ``rows * seconds_per_row`` after the call began (an
actor stage's class sleeps ``startup_s`` in ``__init__``). A row is an int64 ``row``
(its global number) and a ``fixed_size_binary`` ``data`` column: 8 + width bytes, as
declared. CPU task stages get ``concurrency=(1, 1000 + i)`` under streambatch, a cap
that never binds, only so that the planner does not fuse adjacent CPU stages (the
simulator runs one stage per spec, unfused), and ``releases_gil=True`` (the UDF sleeps:
threads in the driver, as the reads, so the run does not switch a stage from threads to
worker processes part-way, a cost the simulator does not have); under Ray Data they are
written plainly.

RESULT: the job's seconds (from building the dataset to its last batch; the
interpreter start, imports and ``init`` excluded), rows missing and delivered twice,
and streambatch's peak buffered bytes, budget and stats.
"""

from __future__ import annotations

import json
import sys
import time


def wait_until(deadline: float) -> None:
    """Sleep until ``deadline`` (time.perf_counter()); at once when it has passed."""
    left = deadline - time.perf_counter()
    if left > 0:
        time.sleep(left)


def rows_table(pa, np, rows, nbytes: int):
    """A block of ``rows`` (an int64 array) of ``nbytes`` bytes each (8 of them the row
    number, the rest a fixed-size binary column)."""
    width = max(1, nbytes - 8)
    n = len(rows)
    data = np.full(n * width, 7, dtype=np.uint8)
    col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)])
    return pa.table({"row": rows, "data": col})


def build(E, P):
    """The dataset of the pipeline ``P`` on engine module ``E`` (streambatch or ray.data)."""
    import numpy as np
    import pyarrow as pa

    src = P["source"]
    if P["engine"] == "ray":
        from ray.data.block import BlockMetadata
    else:
        BlockMetadata = E.BlockMetadata

    def read(first: int, n: int, per_row: float, nbytes: int):
        start = time.perf_counter()
        chunk = n if per_row <= 0 else max(1, min(n, int(0.05 / per_row)))
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            table = rows_table(pa, np, pa.array(np.arange(first + lo, first + hi), pa.int64()),
                               nbytes)
            wait_until(start + hi * per_row)
            yield table

    class SimSource(E.Datasource):
        def get_read_tasks(self, parallelism, **_):
            n, nbytes = src["rows_per_task"], src["bytes_per_row"]
            return [E.ReadTask(lambda i=i: read(i * n, n, src["seconds_per_row"], nbytes),
                               BlockMetadata(num_rows=n, size_bytes=n * nbytes,
                                               exec_stats=None))
                    for i in range(src["read_tasks"])]

        def estimate_inmemory_data_size(self):
            return src["read_tasks"] * src["rows_per_task"] * src["bytes_per_row"]

    def apply(batch, per_row: float, nbytes: int):
        start = time.perf_counter()
        out = rows_table(pa, np, batch["row"], nbytes)
        wait_until(start + batch.num_rows * per_row)
        return out

    class Actor:
        def __init__(self, index: int):
            stage = P["stages"][index]
            time.sleep(stage["startup_s"])
            self.per_row, self.nbytes = stage["seconds_per_row"], stage["bytes_per_row"]

        def __call__(self, batch):
            return apply(batch, self.per_row, self.nbytes)

    ds = E.read_datasource(SimSource(), override_num_blocks=src["read_tasks"])
    for i, s in enumerate(P["stages"]):
        kw = dict(batch_size=s["batch_rows"], batch_format="pyarrow", num_cpus=s["num_cpus"])
        if s["num_gpus"]:
            kw["num_gpus"] = s["num_gpus"]
        if s["uses_actors"]:
            actors = s["actors"] or (1, max(1, int(P["num_gpus"] / s["num_gpus"])))
            ds = ds.map_batches(Actor, fn_constructor_args=(i,), concurrency=tuple(actors), **kw)
            continue
        if P["engine"] == "streambatch":
            kw["concurrency"] = (1, 1000 + i)  # never binds; keeps the stages unfused
            kw["releases_gil"] = True  # it sleeps: threads, no thread/process probe
        ds = ds.map_batches(lambda b, r=s["seconds_per_row"], nb=s["bytes_per_row"]:
                            apply(b, r, nb), **kw)
    return ds


def start(P):
    """Start the engine on logical resources under the budget; its module."""
    if P["engine"] == "streambatch":
        import streambatch as sb

        sb.init(num_cpus=P["num_cpus"], num_gpus=P["num_gpus"], memory_budget=P["budget"],
                progress=False, trace=P.get("trace"))
        return sb
    import logging

    import ray
    import ray.data

    kw = {}
    if P["budget"]:
        kw["object_store_memory"] = max(P["budget"], 75 * 2**20)
    ray.init(address="local", num_cpus=int(P["num_cpus"]), num_gpus=P["num_gpus"],
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kw)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if P["budget"]:
        ctx.override_object_store_memory_limit_fraction = P["budget"] / kw["object_store_memory"]
    return ray.data


def stage_rows(st) -> list:
    """Per stage: tasks, task seconds, first start and last end (seconds after the
    first task of the job started), bytes out."""
    zero = min((s.first_start for s in st.stages if s.first_start is not None), default=0.0)
    return [[s.tasks, s.task_time_s, (s.first_start or zero) - zero, (s.last_end or zero) - zero,
             s.bytes_out] for s in st.stages]


def main() -> None:
    import numpy as np

    P = json.loads(open(sys.argv[1]).read())
    E = start(P)
    total = P["source"]["read_tasks"] * P["source"]["rows_per_task"]
    seen = np.zeros(total, np.int64)
    t0 = time.perf_counter()
    ds = build(E, P)
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        np.add.at(seen, batch["row"].to_numpy(), 1)
    job = time.perf_counter() - t0
    out = {"job_s": job, "rows": int(seen.sum()), "missing": int((seen == 0).sum()),
           "twice": int((seen > 1).sum())}
    if P["engine"] == "streambatch":
        st = ds.stats()
        out.update(peak_buffered_bytes=st.peak_buffered_bytes, budget=st.memory_budget,
                   stats=str(st), stages=stage_rows(st))
    else:
        import ray

        ray.shutdown()
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
