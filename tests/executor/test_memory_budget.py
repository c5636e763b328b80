"""The memory budget holds for data larger than it: the process tree's peak PSS stays
within budget x 1.25 (1.5 with allocator defaults, below) + the baseline of as many
idle interpreters, for read -> map -> write (a fused process stage) and read -> actor
-> write. Reader buffers and a task's working memory count: they are measured per
task. (At 10x the budget, 1.3 GB under 128 MiB, this is benchmarks/parquet_memory.py;
here 3x, ~384 MiB.)

Allocators keep freed pages for reuse: mimalloc (Arrow's, in worker processes; in a
driver that imported pyarrow first, for Arrow's C++ buffers such as the Parquet
writer's, the rest going to glibc's malloc) gives a thread's freed pages back 10 ms
after the free, on that thread's next call into it (``MIMALLOC_PURGE_DELAY``, read
as pyarrow loads). The engine's accounting is checked with that delay at 0 (what it
admits is what the tree holds: within 1.25x, measured 200-232 MiB of 294-299); with
the defaults the driver's reader and writer threads hold freed pages beyond it (up
to ~60 MiB here: 254-300 MiB), so that run is held to 1.5x. A delay of 0 as the
default made a 10 M-row shuffle 8-18% slower."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

psutil = pytest.importorskip("psutil")

MiB = 2**20
BUDGET = 128 * MiB  # a task here works with 60-130 MiB (one file: reader, UDF, writer)
FILES, GROUPS, GROUP_ROWS = 12, 4, 200_000  # ~8 MiB decoded per row group, 384 MiB in all

JOB = textwrap.dedent("""
    import sys
    import pyarrow.compute as pc
    import streambatch as sb

    src, out, budget, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def double(t):
        return t.append_column("e", pc.add(pc.multiply(t["a"], 2), t["b"]))

    class Double:
        def __call__(self, t):
            return double(t)

    sb.init(num_cpus=2, memory_budget=budget)
    ds = sb.read_parquet(src)
    ds = ds.map_batches(double, batch_format="pyarrow", releases_gil=False) if shape == "map" else \
        ds.map_batches(Double, concurrency=1, batch_format="pyarrow", releases_gil=False)
    print(sum(f["rows"] for f in ds.write_parquet(out)))
""")

BASELINE = textwrap.dedent("""
    import sys, time
    import pyarrow.compute, pyarrow.dataset, pyarrow.parquet, streambatch  # what the job loads
    import streambatch.connectors.parquet
    from streambatch.executor.backends.zygote import zygote
    # the job's process tree: this driver, the zygote, and workers forked from it
    children = [zygote().fork() for _ in range(int(sys.argv[1]) - 2)]
    print("ready", flush=True)
    time.sleep(30)
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenx")
    rng = np.random.default_rng(7)
    for f in range(FILES):
        with pq.ParquetWriter(root / f"part-{f}.parquet", pa.schema(
                [("a", pa.int64()), ("b", pa.float64()), ("c", pa.int64()), ("d", pa.float64()),
                 ("g", pa.int64())])) as writer:
            for _ in range(GROUPS):
                n = GROUP_ROWS
                writer.write_table(pa.table({"a": rng.integers(0, 1 << 40, n), "b": rng.random(n),
                                             "c": rng.integers(0, 9, n), "d": rng.random(n),
                                             "g": np.arange(n)}))
    return root


def pss(proc) -> int:
    try:
        return proc.memory_full_info().pss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def tree_peak(popen: subprocess.Popen) -> tuple[int, int]:
    """Peak of the tree's summed PSS, and the number of processes at that peak."""
    root, peak = psutil.Process(popen.pid), (0, 0)
    while popen.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        total = sum(pss(p) for p in procs)
        peak = max(peak, (total, len(procs)))
        time.sleep(0.01)  # sampling interval, not a timing assertion
    return peak


def baseline_pss(procs: int) -> int:
    """Summed PSS of ``procs`` idle processes shaped as the job's (a driver that imported
    streambatch, the zygote, workers forked from it): what the tree holds before it
    holds any data."""
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, str(procs)], stdout=subprocess.PIPE,
                            text=True)
    try:
        proc.stdout.readline()
        root = psutil.Process(proc.pid)
        return sum(pss(p) for p in [root] + root.children(recursive=True))
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


ALLOCATORS = {"purge-at-once": ({"MIMALLOC_PURGE_DELAY": "0"}, 1.25),
              "default": ({}, 1.5)}


@pytest.mark.parametrize("shape,allocator", [
    ("map", "purge-at-once"), ("map", "default"), ("actor", "purge-at-once"),
    pytest.param("actor", "default", marks=pytest.mark.slow),  # (the suite's time: the
])  # engine's accounting is checked tighter, and users' allocator on the map shape)
def test_peak_memory_stays_within_the_budget_on_three_times_the_data(data, tmp_path, shape,
                                                                     allocator):
    assert sum(p.stat().st_size for p in data.iterdir()) > 0
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env, allowance = ALLOCATORS[allocator]
    job = subprocess.Popen([sys.executable, str(script), str(data), str(tmp_path / "out"),
                            str(BUDGET), shape], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, **env})
    peak: list = []
    sampler = threading.Thread(target=lambda: peak.append(tree_peak(job)))
    sampler.start()
    out, _ = job.communicate(timeout=300)
    sampler.join()
    assert job.returncode == 0 and int(out.split()[-1]) == FILES * GROUPS * GROUP_ROWS
    held, procs = peak[0]
    limit = BUDGET * allowance + baseline_pss(procs)
    print(f"{shape}: peak PSS {held / MiB:.0f} MiB, limit {limit / MiB:.0f} MiB ({procs} processes)")
    assert held <= limit, f"peak PSS {held / MiB:.0f} MiB over {limit / MiB:.0f} MiB ({procs} processes)"
