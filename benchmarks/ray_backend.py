"""S1 and W1 on streambatch's Ray backend beside Ray Data, on the same local Ray instance.

Both engines share one Ray instance (Ray Core underneath both), so the difference
is the scheduler. Each run is one fresh process (``_util.run_python``) that:

  1. starts a local Ray instance: ``ray.init(address="local", num_cpus=..., num_gpus=...)``
     (S1: CPU=8, GPU=4 logical, object store max(budget, 75 MiB); W1: CPU=cores, GPU=1);
  2. warms one Ray worker per CPU (neither engine pays Ray's worker start-up alone);
  3. runs the two engines one after the other on that instance, in alternating order
     from run to run (run 1: streambatch first, run 2: Ray Data first, ...):
       streambatch  ``sb.init(backend="ray", address=<that instance's GCS address>, ...)``
       Ray Data     ``ray.data`` with the same UDFs and knobs as benchmarks/s1_scheduler.py
                    and benchmarks/w1_inference.py (their pipeline code is reused verbatim).

"job" is each engine's time from building the dataset to the last row consumed (S1)
or the last file written (W1). Each engine's output is checked exactly as the two
source benchmarks check theirs (S1: every (part, row) once with its checksum; W1:
every id once, logits equal to an in-process reference). The ratio column is Ray
Data's job time / streambatch's, from the same run (> 1: streambatch ahead).

    python benchmarks/ray_backend.py s1 [--budgets-mb 128,2048] [--partitions 40] [--runs 2]
    python benchmarks/ray_backend.py w1 [--images 800] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import s1_scheduler as s1  # noqa: E402
import w1_inference as w1  # noqa: E402
from _util import MiB, fmt_s, machine_summary, median, print_table, run_python  # noqa: E402

MARK = "__RAYBK__"

# Shared by both workloads: start the instance, warm its workers, run the engines.
DRIVER_SRC = '''
def start_ray(num_cpus, num_gpus, store=None):
    import logging
    import ray
    kw = {"object_store_memory": store} if store else {}
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING, **kw)
    ray.data.DataContext.get_current().enable_progress_bars = False

    @ray.remote(num_cpus=1)
    def warm():
        import time
        import numpy, pyarrow, streambatch.executor.backends.ray  # noqa: F401
        time.sleep(0.2)
    ray.get([warm.remote() for _ in range(int(num_cpus))])
    return ray, ray.get_runtime_context().gcs_address

def report(engine, job_s, info):
    sys.stdout.write("\\n%s%s\\n" % (MARK, json.dumps({"engine": engine, "job_s": job_s, "info": info})))
    sys.stdout.flush()
'''


def s1_job(p, budget, order, result_dir):
    store = max(budget, s1.RAY_MIN_STORE)
    return (f"import json, sys, time\nP = {json.dumps(p)}\nBUDGET = {budget}\nMARK = {MARK!r}\n"
            + s1.UDF_SRC + s1.COLLECT_SRC + DRIVER_SRC + f'''
def pipeline(api, **sb_kw):
    return (api.range(P["partitions"], override_num_blocks=P["partitions"])
            .map_batches(produce, batch_size=None, batch_format="numpy")
            .map_batches(transform, batch_size=None, batch_format="numpy", num_cpus=1,
                         concurrency={s1.NUM_CPUS})
            .map_batches(Infer, fn_constructor_args=(P["batch_s"],), batch_size=P["batch_rows"],
                         batch_format="numpy", num_gpus=1, num_cpus=0, concurrency={s1.NUM_GPUS}))

def main():
    ray, address = start_ray({s1.NUM_CPUS}, {s1.NUM_GPUS}, {store})
    for engine in {order!r}:
        if engine == "streambatch-ray":
            import streambatch as sb
            sb.init(backend="ray", address=address, num_cpus={s1.NUM_CPUS}, num_gpus={s1.NUM_GPUS},
                    memory_budget=BUDGET)
            api = sb
        else:
            ray.data.DataContext.get_current().override_object_store_memory_limit_fraction = \\
                BUDGET / {store}
            api = ray.data
        t0 = time.perf_counter()
        ds = pipeline(api)
        cols = collect(ds.iter_batches(batch_size=None, batch_format="numpy"))
        job = time.perf_counter() - t0
        with open({result_dir!r} + "/" + engine + ".json", "w") as f:
            json.dump(cols, f)
        report(engine, job, {{"stats": str(ds.stats())}})
    ray.shutdown()

if __name__ == "__main__":
    main()
''')


def w1_job(in_dir, out_root, cores, order):
    return (f"import json, sys, time\nIN, OUT, CORES, SEED = {in_dir!r}, {out_root!r}, {cores}, "
            f"{w1.SEED}\nPRE_BATCH, MODEL_BATCH = {w1.PRE_BATCH}, {w1.MODEL_BATCH}\nMARK = {MARK!r}\n"
            + w1.UDF_SRC + DRIVER_SRC + f'''
def main():
    ray, address = start_ray(CORES, 1)
    for engine in {order!r}:
        if engine == "streambatch-ray":
            import streambatch as sb
            sb.init(backend="ray", address=address, num_cpus=CORES, num_gpus=1)
            api = sb
        else:
            api = ray.data
        t0 = time.perf_counter()
        ds = (api.read_parquet(IN)
              .map_batches(preprocess, batch_size=PRE_BATCH, batch_format="numpy")
              .map_batches(Model, fn_constructor_args=(SEED,), batch_size=MODEL_BATCH,
                           batch_format="numpy", num_gpus=1, concurrency=1))
        ds.write_parquet(OUT + "/" + engine)
        job = time.perf_counter() - t0
        report(engine, job, {{"stats": str(ds.stats())}})
    ray.shutdown()

if __name__ == "__main__":
    main()
''')


ENGINES = ("streambatch-ray", "ray-data")


def orders(runs):
    return [ENGINES if i % 2 == 0 else ENGINES[::-1] for i in range(runs)]


def parse(stdout):
    out = {}
    for ln in stdout.splitlines():
        if ln.startswith(MARK):
            rec = json.loads(ln[len(MARK):])
            out[rec["engine"]] = rec
    return out


def summarize(label_rows):
    """label_rows: (case, [{engine: job_s} per run]); prints medians and same-run ratios."""
    rows = []
    for label, runs in label_rows:
        sb_s = median([r["streambatch-ray"] for r in runs])
        rd_s = median([r["ray-data"] for r in runs])
        ratios = [r["ray-data"] / r["streambatch-ray"] for r in runs]
        rows.append([label, str(len(runs)), fmt_s(sb_s, 2), fmt_s(rd_s, 2),
                     f"{median(ratios):.2f}x", " ".join(f"{x:.2f}" for x in ratios)])
    print_table(["case", "runs", "streambatch-on-Ray job s", "Ray Data job s",
                 "Ray Data / streambatch (median)", "per run"], rows)


def run_s1(args):
    p = dict(s1.DEFAULTS)
    p.pop("budgets_mb")
    p["partitions"] = args.partitions
    opt = s1.optimum(p)
    budgets = [int(x) for x in args.budgets_mb.split(",")]
    print(f"S1 on one local Ray instance (CPU={s1.NUM_CPUS}, GPU={s1.NUM_GPUS} logical): "
          f"{p['partitions']} read tasks; optimum {opt['optimum']:.2f} s; {machine_summary()}")
    table = []
    for b in budgets:
        runs = []
        for order in orders(args.runs):
            with tempfile.TemporaryDirectory(prefix="sb-rayb-") as td:
                r = run_python(s1_job(p, b * MiB, order, td), timeout=1200, as_file=True)
                r.check(f"S1 at {b} MiB")
                got = parse(r.stdout)
                for e in ENGINES:
                    with open(os.path.join(td, e + ".json")) as f:
                        s1.verify(e, p, json.load(f))
            job = {e: got[e]["job_s"] for e in ENGINES}
            runs.append(job)
            print(f"  budget {b:5d} MiB order {','.join(order)}: " + "  ".join(
                f"{e} {job[e]:.2f} s ({100 * opt['optimum'] / job[e]:.0f}% of optimum)"
                for e in ENGINES) + f"  loadavg {os.getloadavg()[0]:.1f}", flush=True)
            if args.show_stats:
                for e in ENGINES:
                    print(f"--- {e} ---\n{got[e]['info']['stats']}")
        table.append((f"S1 {b} MiB", runs))
    print()
    summarize(table)


def run_w1(args):
    n, files = args.images, args.files
    cores = args.cores or len(os.sched_getaffinity(0))
    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    in_dir, man = w1.ensure_data(data_dir, n, files, w1.SEED)
    w1.warm_page_cache(in_dir)
    import numpy as np

    m = w1.measure_bound(in_dir, n, cores, min(w1.SAMPLE, n))
    refs = (np.asarray(m["ids"]), np.asarray(m["logits"], dtype=np.float32))
    print(f"W1 on one local Ray instance (CPU={cores}, GPU=1 logical): {n} images in {files} files; "
          f"bound {m['bound_s']:.2f} s; {machine_summary()}")
    out_root = os.path.join(data_dir, "out", "w1-ray-backend")
    runs = []
    for order in orders(args.runs):
        shutil.rmtree(out_root, ignore_errors=True)
        r = run_python(w1_job(in_dir, out_root, cores, order), timeout=1200, as_file=True)
        r.check("W1")
        got = parse(r.stdout)
        for e in ENGINES:
            out = w1.read_output(e, os.path.join(out_root, e), n)
            w1.compare(e, out, refs[0], refs[1], "the in-process reference sample")
        job = {e: got[e]["job_s"] for e in ENGINES}
        runs.append(job)
        print(f"  order {','.join(order)}: " + "  ".join(
            f"{e} {job[e]:.2f} s ({n / job[e]:.0f} rows/s, {100 * m['bound_s'] / job[e]:.0f}% of bound)"
            for e in ENGINES) + f"  loadavg {os.getloadavg()[0]:.1f}", flush=True)
        if args.show_stats:
            for e in ENGINES:
                print(f"--- {e} ---\n{got[e]['info']['stats']}")
    shutil.rmtree(out_root, ignore_errors=True)
    print()
    summarize([(f"W1 {n} images", runs)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=["s1", "w1"])
    ap.add_argument("--runs", type=int, default=2, help="runs (engine order alternates; default 2)")
    ap.add_argument("--budgets-mb", default="128,2048", help="S1 memory budgets (default 128,2048)")
    ap.add_argument("--partitions", type=int, default=40, help="S1 read tasks (default 40)")
    ap.add_argument("--images", type=int, default=800, help="W1 images (default 800)")
    ap.add_argument("--files", type=int, default=20, help="W1 parquet files (default 20)")
    ap.add_argument("--cores", type=int, default=None, help="W1 CPUs (default: detected)")
    ap.add_argument("--data-dir", default="bench-data", help="W1 input cache (default ./bench-data)")
    ap.add_argument("--show-stats", action="store_true", help="print both engines' stats")
    args = ap.parse_args(argv)
    (run_s1 if args.workload == "s1" else run_w1)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
