"""W1 soak: does memory stay flat as the data grows? The W1 job (256x256 JPEGs ->
decode -> CNN actor -> parquet, see w1_inference.py) under the DEFAULT memory
budget, on N and 4N images (default 4,000 and 16,000; 20 and 80 files of 200
images), one fresh process per run, the process tree sampled from outside.

Reported per size: job seconds and rows/s, peak RSS sum, peak PSS sum, peak
/dev/shm growth (blocks waiting in the shared-memory store; they count whether or
not a process maps them) and peak "held" (PSS less shared pages + /dev/shm growth:
each page once). The verdict compares the larger run's peaks with the smaller's.

Target (issue 14): peak memory on 16,000 images within 1.2x of that on 4,000.

    python benchmarks/w1_soak.py [--images 4000] [--factor 4] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _jpeg_data import ensure_data  # noqa: E402
from _util import fmt_mb, machine_summary, median, print_table, run_python  # noqa: E402
from w1_inference import JOB_MARK, SEED, _parse, job_code, read_output  # noqa: E402

TARGET = 1.2
IMAGES_PER_FILE = 200


def run_size(n: int, data_dir: str, runs: int, cores: int) -> dict:
    in_dir, _ = ensure_data(data_dir, n, n // IMAGES_PER_FILE, SEED)
    out_dir = os.path.join(data_dir, f"w1_soak_out_{n}")
    recs = []
    for i in range(runs):
        shutil.rmtree(out_dir, ignore_errors=True)
        r = run_python(job_code("streambatch", in_dir, out_dir, cores, None), timeout=3600,
                       interval=0.02, full_interval=1.0, scan_interval=0.25, as_file=True)
        r.check(f"{n} images run {i + 1}")
        out = read_output("streambatch", out_dir, n)  # checks every id once
        shutil.rmtree(out_dir, ignore_errors=True)
        job_s = _parse(r.stdout, JOB_MARK, float)
        m = r.mem
        rec = {"job_s": job_s, "rss": m.rss, "pss": m.pss, "shm": m.shm, "held": m.held,
               "files": out["files"]}
        print(f"  {n} images run {i + 1}/{runs}: job {job_s:.1f} s ({n / job_s:.0f} rows/s)  "
              f"RSS {fmt_mb(m.rss)} MB  PSS {fmt_mb(m.pss)} MB  shm+ {fmt_mb(m.shm)} MB  "
              f"held {fmt_mb(m.held)} MB  loadavg {os.getloadavg()[0]:.1f}", flush=True)
        recs.append(rec)
    return {k: median([r[k] for r in recs]) for k in ("job_s", "rss", "pss", "shm", "held")} | {
        "n": n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4000, help="the smaller size (default 4000)")
    ap.add_argument("--factor", type=int, default=4, help="the larger size / the smaller (4)")
    ap.add_argument("--runs", type=int, default=1, help="runs per size; medians (default 1)")
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    print(f"W1 soak, default memory budget; {machine_summary()}")
    small = run_size(args.images, args.data_dir, args.runs, args.cores)
    large = run_size(args.images * args.factor, args.data_dir, args.runs, args.cores)
    rows = []
    for r in (small, large):
        rows.append([f"{r['n']:,}", f"{r['job_s']:.1f}", f"{r['n'] / r['job_s']:.0f}",
                     fmt_mb(r["rss"]), fmt_mb(r["pss"]), fmt_mb(r["shm"]), fmt_mb(r["held"])])
    print_table(["images", "job s", "rows/s", "peak RSS MB", "peak PSS MB", "peak shm+ MB",
                 "peak held MB"], rows)
    ok = True
    for key in ("rss", "pss", "held"):
        ratio = large[key] / small[key]
        ok &= ratio <= TARGET
        print(f"  {key:5s} {args.factor}x data / 1x: {ratio:.2f} (target <= {TARGET})")
    shm_note = f"{fmt_mb(small['shm'])} -> {fmt_mb(large['shm'])} MB"
    print(f"  /dev/shm peak growth: {shm_note}")
    print(f"target peak memory within {TARGET}x: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
