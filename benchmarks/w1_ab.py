"""W1 with two checkouts of streambatch, runs alternated (A, B, A, B, ...) so that the
load of a shared machine falls on both alike: job time, rows/s, peak RSS / PSS of the
process tree and the engine's peak buffered bytes per run, medians per checkout.

Each checkout is a directory with the repository's layout (a ``git worktree``); the
job's processes import streambatch from it (the editable install's path mapping is
pointed there by a sitecustomize module on PYTHONPATH).

    git worktree add --detach /tmp/before <commit>
    python benchmarks/w1_ab.py --a /tmp/before --b . [--rounds 3] [--images 4000]
        [--engines streambatch,streambatch-processes]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _jpeg_data import ensure_data, warm_page_cache  # noqa: E402
from _util import clean_env, fmt_mb, median, print_table, run_python  # noqa: E402
from w1_inference import INFO_MARK, JOB_MARK, SEED, _parse, job_code, read_output  # noqa: E402

SITE = '''import os
root = os.environ.get("SB_TREE")
if root:
    import __editable___streambatch_0_1_0_finder as finder
    finder.MAPPING.update({"streambatch": root + "/streambatch",
                           "streambatch.connectors": root + "/connectors",
                           "streambatch.executor": root + "/executor",
                           "streambatch.operators": root + "/operators"})
'''


def run_once(tree: str, site: str, engine: str, in_dir: str, n: int, cores: int) -> dict:
    import json

    out_dir = tempfile.mkdtemp(prefix="sb-w1ab-")
    env = clean_env({"SB_TREE": tree, "PYTHONPATH": site})
    r = run_python(job_code(engine, in_dir, out_dir, cores, None), env=env, timeout=1800,
                   interval=0.02, full_interval=1.0, scan_interval=0.25, as_file=True)
    r.check(f"{engine} in {tree}")
    read_output(engine, out_dir, n)  # every id once
    shutil.rmtree(out_dir, ignore_errors=True)
    info = _parse(r.stdout, INFO_MARK, json.loads) or {}
    return {"job_s": _parse(r.stdout, JOB_MARK, float), "rss": r.mem.rss, "pss": r.mem.pss,
            "buffered": info.get("peak_buffered_bytes") or 0, "load": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="checkout A (e.g. before)")
    ap.add_argument("--b", required=True, help="checkout B (e.g. after)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--engines", default="streambatch")
    ap.add_argument("--data-dir", default="bench-data")
    args = ap.parse_args(argv)
    trees = {"A": os.path.abspath(args.a), "B": os.path.abspath(args.b)}
    in_dir, _ = ensure_data(os.path.abspath(args.data_dir), args.images, args.files, SEED)
    warm_page_cache(in_dir)
    cores = len(os.sched_getaffinity(0))
    recs: dict = {}
    with tempfile.TemporaryDirectory(prefix="sb-w1ab-site-") as site:
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(SITE)
        for k in range(args.rounds):
            for engine in args.engines.split(","):
                for name, tree in trees.items():
                    rec = run_once(tree, site, engine, in_dir, args.images, cores)
                    recs.setdefault((engine, name), []).append(rec)
                    print(f"  round {k + 1} {engine} {name}: job {rec['job_s']:.2f} s "
                          f"({args.images / rec['job_s']:.0f} rows/s)  RSS {fmt_mb(rec['rss'])} MB"
                          f"  PSS {fmt_mb(rec['pss'])} MB  buffered peak {fmt_mb(rec['buffered'])}"
                          f" MB  load {rec['load']:.1f}", flush=True)
    rows = []
    for (engine, name), rs in recs.items():
        job = median([r["job_s"] for r in rs])
        rows.append([engine, f"{name} {trees[name]}", str(len(rs)), f"{job:.2f}",
                     f"{args.images / job:.0f}", fmt_mb(median([r["rss"] for r in rs])),
                     fmt_mb(max(r["rss"] for r in rs)), fmt_mb(median([r["pss"] for r in rs])),
                     fmt_mb(max(r["buffered"] for r in rs))])
    print_table(["engine", "checkout", "runs", "job s", "rows/s", "peak RSS MB", "worst RSS MB",
                 "peak PSS MB", "worst buffered MB"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
