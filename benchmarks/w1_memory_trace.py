"""Where W1's memory goes: one streambatch run of the W1 job (see w1_inference.py),
its process tree sampled from outside every --interval [0.05] s: each process's RSS
by role (driver, zygote, its children: actors and workers), the job's shared-memory
store (its block files in /dev/shm) and /dev/shm as a whole (which also counts
unlinked blocks a process still maps, and other processes' files). Prints each role's peak RSS, the peak of the sum, and a time
line of the store.

    python benchmarks/w1_memory_trace.py [--images 4000] [--files 20] [--engine streambatch]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _jpeg_data import ensure_data, warm_page_cache  # noqa: E402
from _util import MiB, clean_env  # noqa: E402
from w1_inference import JOB_MARK, SEED, _parse, job_code, read_output  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None


def role(proc, driver_pid: int) -> str:
    """driver, zygote, actor or worker (a child of the zygote is an actor when it
    imported torch: its RSS is large from the start; told apart by name in its
    command line otherwise)."""
    if proc.pid == driver_pid:
        return "driver"
    try:
        parent = proc.ppid()
    except psutil.Error:
        return "?"
    if parent == driver_pid:
        return "zygote"
    return "child"


def store_bytes(driver_pid: int) -> tuple[int, int]:
    """(bytes in the block files of the job's store, /dev/shm used bytes: other
    processes' files too, and unlinked blocks a process still maps)."""
    total = 0
    for path in glob.glob(f"/dev/shm/streambatch-{driver_pid}-*/*"):
        try:
            total += os.stat(path).st_blocks * 512
        except OSError:
            pass
    return total, shutil.disk_usage("/dev/shm").used


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--engine", default="streambatch")
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--budget-mb", type=int, default=None)
    ap.add_argument("--show-output", action="store_true", help="print the job's output (stats)")
    ap.add_argument("--every", type=int, default=0, help="time line: every Nth sample (0: ~40 lines)")
    args = ap.parse_args(argv)
    in_dir, _ = ensure_data(os.path.abspath(args.data_dir), args.images, args.files, SEED)
    warm_page_cache(in_dir)
    out_dir = tempfile.mkdtemp(prefix="sb-w1-trace-")
    budget = args.budget_mb * MiB if args.budget_mb else None
    code = job_code(args.engine, in_dir, out_dir, len(os.sched_getaffinity(0)), budget)
    with tempfile.TemporaryDirectory(prefix="sb-trace-") as td:
        script = os.path.join(td, "job.py")
        with open(script, "w") as f:
            f.write(code)
        out_p = os.path.join(td, "out")
        shm0 = store_bytes(0)[1]
        with open(out_p, "wb") as fo:
            proc = subprocess.Popen([sys.executable, script], stdout=fo, stderr=subprocess.STDOUT,
                                    env=clean_env())
            root = psutil.Process(proc.pid)
            seen: dict[int, psutil.Process] = {proc.pid: root}
            peaks: dict[str, int] = {}
            peak_sum, at_peak, line = 0, {}, []
            t0 = time.monotonic()
            while proc.poll() is None:
                try:
                    for c in root.children(recursive=True):
                        seen.setdefault(c.pid, c)
                except psutil.Error:
                    pass
                total, now_roles = 0, {}
                for pid, p in list(seen.items()):
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    name = role(p, proc.pid)
                    key = f"{name}:{pid}"
                    now_roles[key] = rss
                    peaks[key] = max(peaks.get(key, 0), rss)
                    total += rss
                if total > peak_sum:
                    peak_sum, at_peak = total, dict(now_roles)
                store, shm = store_bytes(proc.pid)
                line.append((time.monotonic() - t0, total, store, shm - shm0))
                time.sleep(args.interval)
        with open(out_p, errors="replace") as f:
            stdout = f.read()
    if proc.returncode:
        print(stdout[-3000:])
        return 1
    read_output(args.engine, out_dir, args.images)
    shutil.rmtree(out_dir, ignore_errors=True)
    job_s = _parse(stdout, JOB_MARK, float)
    print(f"{args.engine}: {args.images} images in {args.files} files: job {job_s:.2f} s "
          f"({args.images / job_s:.0f} rows/s); peak RSS sum {peak_sum / MiB:.0f} MiB")
    print("  at the peak: " + ", ".join(f"{k} {v / MiB:.0f}" for k, v in
                                        sorted(at_peak.items(), key=lambda kv: -kv[1])))
    print("  each one's peak: " + ", ".join(f"{k} {v / MiB:.0f}" for k, v in
                                            sorted(peaks.items(), key=lambda kv: -kv[1])))
    print(f"  store peak {max(s for _, _, s, _ in line) / MiB:.0f} MiB, /dev/shm growth peak "
          f"{max(d for _, _, _, d in line) / MiB:.0f} MiB")
    if args.show_output:
        print(f"--- the job's output (time line from monotonic {t0:.3f}) ---\n{stdout}")
    step = args.every or max(1, len(line) // 40)
    print("  t s   RSS sum MiB   store MiB   /dev/shm+ MiB")
    for t, total, store, d in line[::step]:
        print(f"  {t:5.1f} {total / MiB:8.0f} {store / MiB:10.0f} {d / MiB:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
