"""Seeded generation of cases: random data and a random pipeline, as one JSON spec.

A spec is plain JSON, so the same spec runs in the driver subprocess (``driver``)
and in the oracle (``oracle``). ``make_spec(seed)`` is deterministic in ``seed``;
``build_rows`` / ``build_tables`` rebuild a case's data from its ``data`` part.

Data: ``id`` (unique, never null) plus a random subset of FEATURES: nullable ints
and floats (NaN, inf), unicode and large strings, bytes, bools, ragged structs,
lists with null items, dictionary-encoded strings, fixed-shape tensors (some null
rows), variable-shape tensors (zero-size rows included), keys present in some rows
only, deep nesting. Sources: from_items, from_arrow, read_parquet, range, from_numpy.

Pipeline: map (add a value of one of ``udfs.VALUE_KINDS``, drop a key from half the
rows, replace the row), flat_map (0..3 children per row), filter, map_batches with
functions (numpy / pandas / pyarrow, several batch sizes; add a column, drop rows,
sleep) and with classes (actor pools with constructor args and concurrency), each
with ``on_error`` raise or skip and optional data-driven poison. Consumers:
take_all, iter_rows, iter_batches (run to the end, or left early by ``break`` or an
exception in the loop), write_parquet (plain or hive-partitioned).
Faults: worker SIGKILL, actor SIGKILL (in a call or while starting), driver SIGKILL
then resume with other num_cpus and memory budget, Ctrl-C while iterating (and
while a UDF hangs).
"""

from __future__ import annotations

import os
import random

import numpy as np
import pyarrow as pa

FEATURES = ["i", "f", "s", "big", "b", "bool", "nest", "lst", "dict", "t", "rt", "opt", "deep"]
FAULTS = ["none", "worker_kill", "actor_kill", "driver_kill", "sigint", "sigint_hung"]
FAULT_WEIGHTS = [0.26, 0.2, 0.16, 0.2, 0.12, 0.06]
MiB = 2**20
WORDS = ["alpha", "béta", "γάμμα", "", "a,b", "x\ny", "🙂", "null", "None", "\x00z"]


COMPLEX_FEATURES = {"lst", "t", "rt", "deep"}
COMPLEX_VALUES = {"list", "list_nulls", "nd", "nd_ragged", "nd1"}


def simple() -> bool:
    """SBPROP_SIMPLE=1: no lists or tensors in the data (to look at faults and sinks
    past the row-conversion defects those find); the same seed gives another case."""
    return os.environ.get("SBPROP_SIMPLE") == "1"


def _features() -> list[str]:
    return [f for f in FEATURES if not (simple() and f in COMPLEX_FEATURES)]


# ------------------------------------------------------------------ data


def build_rows(data: dict) -> list[dict]:
    """The case's input rows as Python values (numpy arrays for tensors)."""
    n, feats = data["n"], set(data["features"])
    if data["source"] == "range":
        return [{"id": i} for i in range(n)]
    if data["source"] == "numpy":
        return [{"data": a} for a in np.concatenate(build_numpy(data))] if n else []
    rng = random.Random(data["seed"])
    rows = []
    for i in range(n):
        r: dict = {"id": i}
        if "i" in feats:
            r["i"] = None if rng.random() < 0.2 else rng.randint(-2**40, 2**40)
        if "f" in feats:
            x = rng.random()
            r["f"] = (None if x < 0.1 else float("nan") if x < 0.15 else
                      float("inf") if x < 0.17 else rng.uniform(-1e6, 1e6))
        if "s" in feats:
            r["s"] = None if rng.random() < 0.1 else "".join(
                rng.choice(WORDS) for _ in range(rng.randint(0, 6)))
        if "big" in feats:
            r["big"] = f"B{i}" * rng.randint(20000, 100000) if rng.random() < 0.04 else f"b{i}"
        if "b" in feats:
            r["b"] = None if rng.random() < 0.1 else bytes(rng.randrange(256)
                                                            for _ in range(rng.randint(0, 9)))
        if "bool" in feats:
            r["bool"] = rng.choice([True, False, None])
        if "nest" in feats:
            if rng.random() < 0.1:
                r["nest"] = None
            else:
                nest: dict = {"a": rng.randint(-5, 5)}
                if rng.random() < 0.5:
                    nest["l"] = [rng.choice(WORDS) for _ in range(rng.randint(0, 3))]
                if rng.random() < 0.3:
                    nest["z"] = rng.random()
                r["nest"] = nest
        if "lst" in feats:
            r["lst"] = None if rng.random() < 0.1 else [
                None if rng.random() < 0.1 else rng.randint(-100, 100)
                for _ in range(rng.randint(0, 5))]
        if "dict" in feats:
            r["dict"] = rng.choice(["red", "green", "blue", "ünïcode", None])
        if "t" in feats:
            r["t"] = (None if data["source"] == "items" and rng.random() < 0.05 else
                      np.array([[rng.randint(-9, 9) / 4 for _ in range(3)] for _ in range(2)],
                               np.float32))
        if "rt" in feats:
            k = rng.randint(0, 3)
            r["rt"] = np.array([rng.randint(-300, 300) for _ in range(2 * k)],
                               np.int16).reshape(k, 2)
        if "opt" in feats and rng.random() < 0.4:
            r["opt"] = rng.randint(0, 10**12)
        if "deep" in feats:
            r["deep"] = [{"x": [rng.randint(0, 3) for _ in range(rng.randint(0, 2))],
                          "y": {"z": rng.choice(WORDS)}} for _ in range(rng.randint(0, 2))]
        rows.append(r)
    return rows


def build_numpy(data: dict) -> list[np.ndarray]:
    """from_numpy input: arrays of (2, 2) tensors whose [0, 0] holds the row's id."""
    sizes = _split(data["n"], data["pieces"], random.Random(data["seed"]))
    out, start = [], 0
    for size in sizes:
        a = np.zeros((size, 2, 2), np.float64)
        a[:, 0, 0] = np.arange(start, start + size)
        a[:, 1, :] = np.arange(start, start + size)[:, None] / 8
        out.append(a)
        start += size
    return out


def build_tables(data: dict) -> list[pa.Table]:
    """from_arrow / parquet input: the rows as Arrow tables (explicit tensor and
    dictionary columns)."""
    from streambatch.connectors.tensors import tensor_array

    rows = build_rows(data)
    sizes = _split(len(rows), data["pieces"], random.Random(data["seed"] + 1))
    keys = ["id"] + [f for f in FEATURES if f in data["features"]]
    tables, start = [], 0
    for size in sizes:
        chunk = rows[start:start + size]
        start += size
        cols = {}
        for k in keys:
            values = [r.get(k) for r in chunk]
            if k == "t":
                cols[k] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(values))
            elif k == "rt":
                cols[k] = tensor_array(values, variable=True)
            elif k == "dict":
                cols[k] = pa.array(values, pa.string()).dictionary_encode()
            elif k == "big":
                cols[k] = pa.array(values, pa.large_string())
            else:
                cols[k] = pa.array(values)
        tables.append(pa.table(cols))
    return tables


def _split(n: int, pieces: int, rng: random.Random) -> list[int]:
    """``n`` rows in ``pieces`` non-empty parts (fewer when n is small)."""
    pieces = max(1, min(pieces, n))
    if n == 0:
        return []
    cuts = sorted(rng.sample(range(1, n), pieces - 1)) if pieces > 1 else []
    bounds = [0, *cuts, n]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


# ------------------------------------------------------------------ pipelines


def make_spec(seed: int, fault: str | None = None) -> dict:
    """A random case; ``fault`` forces the fault kind."""
    rng = random.Random(seed)
    drawn = rng.choices(FAULTS, FAULT_WEIGHTS)[0]
    fault = fault or drawn  # drawn either way: a forced fault leaves the rest as it was
    slow = fault in ("driver_kill", "sigint", "sigint_hung")
    source = rng.choices(["items", "arrow", "parquet", "range", "numpy"], [4, 2, 2, 1, 1])[0]
    n = rng.choice([300, 500, 800, 1200]) if slow else rng.choices(
        [0, 1, 5, 37, 150, 400, 900], [1, 1, 2, 3, 4, 3, 2])[0]
    feats = [] if source in ("range", "numpy") else sorted(
        rng.sample(_features(), rng.randint(1, 7)))
    blocks = rng.choice([None, 1, 2, 5, 13, 40])
    if slow:
        blocks = rng.choice([None, 8, 16, 30])
    data = {"source": source, "n": n, "features": feats, "seed": rng.randrange(10**6),
            "pieces": rng.randint(1, 6), "blocks": blocks,
            "row_group_size": rng.choice([16, 50, 200, 10**6])}
    consumer = _consumer(rng, fault)
    side = random.Random(seed * 31 + 7)  # its draws leave the rest of the spec as it was
    if fault == "none" and consumer["kind"] == "iter_batches" and side.random() < 0.4:
        # the user stops iterating early (break, or an exception in the loop body)
        consumer.update(kind="iter_stop", how=side.choice(["break", "raise"]),
                        after=side.randint(1, 3))
    ops = _ops(rng, data, consumer, fault)
    cpus = rng.randint(1, 4)
    if slow:  # these faults need a job that runs: its actor pools must fit
        cpus = max(cpus, min(4, actors_needed(ops)))
    budget = rng.choice([64, 96, 128, 256, 512, 1024])
    low = actors_needed(ops) if slow else 1
    resume = {"num_cpus": rng.choice([c for c in range(max(1, low), 5) if c != cpus] or [cpus]),
              "memory_budget": rng.choice([b for b in (64, 128, 256, 512, 1024) if b != budget])
              * MiB}
    return {"seed": seed, "fault": fault, "data": data, "ops": ops, "consumer": consumer,
            "run": {"num_cpus": cpus, "memory_budget": budget * MiB}, "resume": resume,
            # driver_kill: 2 = the first resume is killed too, and a second one finishes
            "driver_kills": 2 if fault == "driver_kill" and random.Random(seed).random() < 0.3
            else 1}


def actors_needed(ops: list[dict]) -> int:
    """CPUs the actor pools hold at their minimum size (one CPU per actor)."""
    total = 0
    for op in ops:
        if op["op"] == "actor":
            conc = op["concurrency"]
            total += conc[0] if isinstance(conc, list) else conc
    return total


def _consumer(rng: random.Random, fault: str) -> dict:
    if fault == "driver_kill":
        kind = "write"
    elif fault in ("sigint", "sigint_hung"):
        kind = "iter_batches"
    else:
        kind = rng.choices(["take_all", "iter_rows", "iter_batches", "write"], [2, 1, 3, 4])[0]
    consumer: dict = {"kind": kind}
    if kind == "iter_batches":
        consumer["batch_size"] = rng.choice([None, 1, 7, 64, 256]) if fault == "none" or \
            fault.endswith("kill") else rng.choice([7, 16, 32])
    if kind == "write":
        consumer["partition_cols"] = ["p"] if rng.random() < 0.4 else None
        consumer["style"] = rng.choice(["int", "str", "str_nulls"])
    return consumer


def _ops(rng: random.Random, data: dict, consumer: dict, fault: str) -> list[dict]:
    keys = set(data["features"])
    ops: list[dict] = []
    state = {"raise_poison": False, "batch_poison": False}

    def add(op: dict) -> dict:
        op["j"] = len(ops)
        op["name"] = f"Actor{op['j']}" if op["op"] == "actor" else f"{op['kind']}{op['j']}"
        ops.append(op)
        return op

    if data["source"] == "numpy":
        add({"op": "map", "kind": "npid", "on_error": "raise"})
        keys.add("data")
    count = rng.randint(1, 4)
    flat_maps = actors = 0
    for _ in range(count):
        kind = rng.choices(["map", "flat_map", "filter", "map_batches", "actor"],
                           [3, 1.2, 1.2, 2.5, 1.3])[0]
        if kind == "flat_map" and flat_maps >= 2 or kind == "actor" and actors >= 2:
            kind = "map"
        flat_maps += kind == "flat_map"
        actors += kind == "actor"
        op = _random_op(rng, kind, keys)
        _maybe_poison(rng, op, state)
        add(op)
        if op["op"] in ("map",) and op["kind"] in ("add", "replace"):
            keys = set() if op["kind"] == "replace" else keys
            keys.add(op_name_hint(len(ops) - 1, op))
    if consumer["kind"] == "write" and consumer.get("partition_cols"):
        replaced = [o["j"] + 1 for o in ops if o["kind"] == "replace"]  # replace drops "p"
        at = rng.randint(max(replaced, default=0), len(ops))
        _insert(ops, at, {"op": "map", "kind": "setpart", "style": consumer["style"],
                          "on_error": rng.choice(["raise", "skip"])})
    if fault in ("driver_kill", "sigint", "sigint_hung"):
        sigint = fault == "sigint"  # Ctrl-C comes after the first batch: the job must go on
        _insert(ops, rng.randint(0, len(ops)),
                {"op": "map_batches", "kind": "sleep",
                 "seconds": rng.choice([0.05, 0.08] if sigint else [0.02, 0.04]),
                 "batch_format": "pyarrow", "batch_size": rng.choice([4, 8] if sigint else [8, 16, 24]),
                 "on_error": "raise"})
    extra = random.Random(rng.random())  # draws here leave the rest of the spec as it was
    if fault == "driver_kill" and extra.random() < 0.3:  # lineage recovery before the kill
        targets = [o for o in ops if o["op"] in ("map", "flat_map", "filter", "map_batches")
                   and o["kind"] != "npid"]
        if targets:
            mod = extra.randint(5, 30)
            extra.choice(targets)["kill"] = {"mod": mod, "rem": extra.randrange(mod),
                                             "where": "call"}
    if fault == "worker_kill":
        targets = [o for o in ops if o["op"] in ("map", "flat_map", "filter", "map_batches")
                   and o["kind"] != "npid"]
        if not targets:
            _insert(ops, rng.randint(0, len(ops)),
                    {"op": "map_batches", "kind": "badd", "batch_format": "numpy",
                     "batch_size": rng.choice([None, 4, 32]), "on_error": "raise"})
            targets = [o for o in ops if o["kind"] == "badd"]
        target = rng.choice(targets)
        mod = rng.randint(1, 6)
        target["kill"] = {"mod": mod, "rem": rng.randrange(mod), "where": "call"}
    if fault == "actor_kill":
        targets = [o for o in ops if o["op"] == "actor"]
        if not targets:
            _insert(ops, rng.randint(0, len(ops)), _random_op(rng, "actor", keys))
            targets = [o for o in ops if o["op"] == "actor"]
        mod = rng.randint(1, 6)
        rng.choice(targets)["kill"] = {"mod": mod, "rem": rng.randrange(mod),
                                       "where": rng.choice(["call", "call", "init"])}
    if fault == "sigint_hung":
        _insert(ops, rng.randint(0, len(ops)),
                {"op": "map", "kind": "add", "vk": "int", "on_error": "raise",
                 "hang": {"mod": rng.randint(20, 60), "rem": rng.randrange(10)}})
    if fault in ("driver_kill", "sigint", "sigint_hung"):
        for op in ops:  # these faults need a job that runs on, not one that fails
            if op.get("poison") and op["on_error"] == "raise":
                op["on_error"] = "skip"
    return ops


def op_name_hint(j: int, op: dict) -> str:
    return f"Actor{j}" if op["op"] == "actor" else f"{op['kind']}{j}"


def _insert(ops: list[dict], at: int, op: dict) -> None:
    """Insert ``op`` at ``at``, renumbering (names follow positions)."""
    if ops and ops[0]["kind"] == "npid":
        at = max(at, 1)
    ops.insert(at, op)
    for j, o in enumerate(ops):
        old = o.get("name")
        o["j"] = j
        o["name"] = op_name_hint(j, o)
        if old and old != o["name"]:
            for other in ops:  # a drop op naming a renamed key follows it
                if other.get("key") == old:
                    other["key"] = o["name"]


def _random_op(rng: random.Random, kind: str, keys: set) -> dict:
    on_error = rng.choice(["raise", "skip"])
    if kind == "map":
        droppable = sorted(k for k in keys if k not in ("id", "p", "data"))
        sub = rng.choices(["add", "drop", "replace"], [6, 2 if droppable else 0, 1])[0]
        op: dict = {"op": "map", "kind": sub, "on_error": on_error}
        if sub in ("add", "replace"):
            from tests.property.udfs import VALUE_KINDS
            op["vk"] = rng.choice([k for k in VALUE_KINDS if not (simple() and k in COMPLEX_VALUES)])
        else:
            op["key"] = rng.choice(droppable)
        return op
    if kind == "flat_map":
        return {"op": "flat_map", "kind": "explode", "a": rng.randint(1, 5),
                "b": rng.randint(0, 3), "fan": rng.randint(2, 4), "on_error": on_error}
    if kind == "filter":
        return {"op": "filter", "kind": "keep", "a": rng.randint(1, 5), "b": rng.randint(0, 3),
                "m": rng.randint(2, 7), "on_error": on_error}
    fmt = rng.choice(["numpy", "pandas", "pyarrow"])
    size = rng.choice([None, 1, 3, 16, 100, "default"])
    if kind == "map_batches":
        sub = rng.choices(["badd", "bfilter"], [2, 1])[0]
        op = {"op": "map_batches", "kind": sub, "batch_format": fmt, "batch_size": size,
              "on_error": on_error}
        if sub == "bfilter":
            op["m"], op["r"] = rng.randint(2, 6), rng.randint(0, 1)
        return op
    return {"op": "actor", "kind": "aadd", "batch_format": fmt, "batch_size": size,
            "k": rng.randint(0, 99), "on_error": on_error,
            "concurrency": rng.choice([1, 2, [1, 2], [1, 3]])}


def _maybe_poison(rng: random.Random, op: dict, state: dict) -> None:
    """Data-driven failures: rows (or batches holding rows) whose id % mod == rem.

    At most one op raises for real (the job must fail), and none after a batch op
    that skips poisoned batches (which rows those take along depends on batching)."""
    if rng.random() > 0.3 or state["raise_poison"]:
        return
    batch = op["op"] in ("map_batches", "actor")
    how = rng.choice(["raise", "badlen"] if batch else
                     ["raise"] if op["op"] == "filter" else ["raise", "badvalue", "notdict"])
    mod = rng.randint(5, 40)
    op["poison"] = {"mod": mod, "rem": rng.randrange(mod), "how": how}
    raising = rng.random() < 0.15 and not state["batch_poison"]
    op["on_error"] = "raise" if raising else "skip"
    state["raise_poison"] |= raising
    state["batch_poison"] |= batch
