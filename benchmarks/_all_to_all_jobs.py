"""The jobs of benchmarks/all_to_all.py: for each engine and operation, the code a
competent user writes (run in a fresh process), and the consumer every engine's output
goes through."""

MiB = 2**20
BUDGET = 256 * MiB  # streambatch-256: sort under this memory budget
JOB_MARK = "__JOB_S__"
RES_MARK = "__RESULT__"
FIRST_KEYS = 1000


# --------------------------------------------------------------------------- jobs
# The consumer every engine's output goes through (inside the timed region: a few
# vectorised passes over the output, the same for every engine).
CHECK_SRC = r'''
import json, sys, time
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

class Check:
    def __init__(self, op, hot):
        self.op, self.hot = op, hot
        self.rows = 0
        self.r = {"sum_val": 0.0, "sum_kv": 0.0, "sum_key": 0, "sorted": True, "last": None,
                  "first_keys": [], "sum_count": 0, "sum_sum": 0.0, "sum_meancount": 0.0,
                  "hot_count": None, "hot_sum": None}
        self.keys = []

    def add(self, t):
        n = t.num_rows
        if not n:
            return
        self.rows += n
        r = self.r
        key = t.column("key").to_numpy()
        if self.op == "groupby":
            cnt = t.column("count").to_numpy().astype(np.int64)
            sm, mn = t.column("sum").to_numpy(), t.column("mean").to_numpy()
            r["sum_count"] += int(cnt.sum())
            r["sum_sum"] += float(sm.sum())
            r["sum_meancount"] += float((mn * cnt).sum())
            self.keys.append(key)
            at = np.flatnonzero(key == self.hot)
            if len(at):
                r["hot_count"] = int(cnt[at[0]]) + (r["hot_count"] or 0)
                r["hot_sum"] = float(sm[at[0]]) + (r["hot_sum"] or 0.0)
            return
        val = t.column("val").to_numpy()
        r["sum_val"] += float(val.sum())
        r["sum_kv"] += float((key.astype(np.float64) * val).sum())
        r["sum_key"] += int(key.sum())
        if self.op == "sort":
            if (r["last"] is not None and val[0] < r["last"]) or bool((np.diff(val) < 0).any()):
                r["sorted"] = False
            r["last"] = float(val[-1])
        if len(r["first_keys"]) < FIRST_KEYS:
            r["first_keys"] += key[:FIRST_KEYS - len(r["first_keys"])].tolist()

    def done(self, t0):
        sys.stdout.write("\n%s%.6f\n" % (JOB_MARK, time.perf_counter() - t0))
        r = dict(self.r, rows=self.rows)
        if self.op == "groupby":
            keys = np.concatenate(self.keys) if self.keys else np.zeros(0, np.int64)
            r["unique_keys"] = int(len(np.unique(keys)))
        sys.stdout.write("\n" + RES_MARK + json.dumps(r) + "\n")
        sys.stdout.flush()

def table_of(b):
    return b if isinstance(b, pa.Table) else pa.Table.from_batches([b])
'''

RENAME = {"sum(val)": "sum", "mean(val)": "mean", "count()": "count"}


def job_code(engine, op, in_dir, man, cores):
    head = (f"OP, IN, HOT, CORES = {op!r}, {in_dir!r}, {man['hot_key']}, {cores}\n"
            f"JOB_MARK, RES_MARK, FIRST_KEYS = {JOB_MARK!r}, {RES_MARK!r}, {FIRST_KEYS}\n"
            f"RENAME = {RENAME!r}\n" + CHECK_SRC)
    if engine in ("streambatch", "streambatch-256"):
        init = f"sb.init(memory_budget={BUDGET})\n" if engine == "streambatch-256" else ""
        body = f'''
import streambatch as sb
{init}chk = Check(OP, HOT)
t0 = time.perf_counter()
ds = sb.read_parquet(IN)
if OP == "groupby":
    out = ds.groupby("key").aggregate(sb.Sum("val"), sb.Mean("val"), sb.Count())
elif OP == "sort":
    out = ds.sort("val")
else:
    out = ds.random_shuffle(seed=0)
for b in out.iter_batches(batch_size=None, batch_format="pyarrow"):
    b = table_of(b)
    chk.add(b.rename_columns([RENAME.get(c, c) for c in b.column_names]))
chk.done(t0)
'''
    elif engine == "ray":
        body = '''
import ray
import ray.data
from ray.data.aggregate import Count, Mean, Sum
ray.init(address="local", num_cpus=CORES, include_dashboard=False, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
chk = Check(OP, HOT)
t0 = time.perf_counter()
ds = ray.data.read_parquet(IN)
if OP == "groupby":
    out = ds.groupby("key").aggregate(Sum("val"), Mean("val"), Count())
elif OP == "sort":
    out = ds.sort("val")
else:
    out = ds.random_shuffle(seed=0)
for b in out.iter_batches(batch_size=None, batch_format="pyarrow"):
    b = table_of(b)
    chk.add(b.rename_columns([RENAME.get(c, c) for c in b.column_names]))
chk.done(t0)
ray.shutdown()
'''
    elif engine == "polars":
        body = '''
import polars as pl
chk = Check(OP, HOT)
t0 = time.perf_counter()
lf = pl.scan_parquet(IN + "/*.parquet")
if OP == "groupby":
    df = lf.group_by("key").agg(pl.col("val").sum().alias("sum"), pl.col("val").mean().alias("mean"),
                                pl.len().alias("count")).collect()
elif OP == "sort":
    df = lf.sort("val").collect()
else:
    df = lf.collect().sample(fraction=1.0, shuffle=True, seed=0)
for b in df.to_arrow().to_batches():
    chk.add(table_of(b))
chk.done(t0)
'''
    elif engine == "duckdb":
        body = '''
import duckdb
chk = Check(OP, HOT)
t0 = time.perf_counter()
con = duckdb.connect()
src = "read_parquet('%s/*.parquet')" % IN
if OP == "groupby":
    q = "SELECT key, sum(val) AS sum, avg(val) AS mean, count(*) AS count FROM %s GROUP BY key" % src
elif OP == "sort":
    q = "SELECT * FROM %s ORDER BY val" % src
else:
    con.sql("SELECT setseed(0.5)").fetchall()
    q = "SELECT * FROM %s ORDER BY random()" % src
rel = con.sql(q)
res = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
for b in res.to_batches():
    chk.add(table_of(b))
chk.done(t0)
'''
    elif engine == "daft":
        body = '''
import daft
from daft import col
chk = Check(OP, HOT)
t0 = time.perf_counter()
df = daft.read_parquet(IN + "/*.parquet")
if OP == "groupby":
    df = df.groupby("key").agg(col("val").sum().alias("sum"), col("val").mean().alias("mean"),
                               col("val").count().alias("count"))
elif OP == "sort":
    df = df.sort("val")
else:
    df = df.shuffle(seed=0)
for b in df.to_arrow().to_batches():
    chk.add(table_of(b))
chk.done(t0)
'''
    elif engine == "baseline":
        body = '''
import streambatch, pyarrow, pyarrow.parquet, pyarrow.compute
time.sleep(0.5)  # let the sampler see the settled interpreter
'''
    else:
        raise ValueError(engine)
    return head + body
