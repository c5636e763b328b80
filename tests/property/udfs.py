"""The UDFs of generated pipelines. Each one is deterministic in the row's ``id``;
failures are data-driven (``poison``: rows whose ``id % mod == rem``), so the oracle
knows them; faults (``kill``, ``hang``) happen once per case (a flag file under the
case's directory) and only inside a worker process, never in the driver or oracle.

Ops are plain JSON dicts (see ``gen``); each op's ``name`` is unique in its
pipeline and is the UDF's label (``Map(map2)``, ``MapBatches(Actor3)``), so a dead
letter names the op that produced it.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pyarrow as pa

DRIVER_ENV = "SBPROP_DRIVER_PID"
MISSING = object()  # a value_for() result meaning "leave the key out of this row"


class Unrepresentable:
    """A value no Arrow block can hold (a poisoned row's output)."""

    def __repr__(self) -> str:
        return "<Unrepresentable>"


def in_worker() -> bool:
    """True in a process forked by a driver (not the driver, not the oracle)."""
    driver = os.environ.get(DRIVER_ENV)
    return driver is not None and int(driver) != os.getpid()


def once(flag: str) -> bool:
    """True the first time any process of the case asks for ``flag``."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False


def matches(rule: dict | None, rid: int) -> bool:
    return rule is not None and rid % rule["mod"] == rule["rem"]


def fault_point(op: dict, rid: int) -> None:
    """SIGKILL this worker (``kill``) or hang it (``hang``) once, on a matching row."""
    if not in_worker():
        return
    kill = op.get("kill")
    if kill and kill.get("where", "call") == "call" and matches(kill, rid) and once(kill["flag"]):
        os.kill(os.getpid(), signal.SIGKILL)
    hang = op.get("hang")
    if hang and matches(hang, rid) and once(hang["flag"]):
        time.sleep(3600)


def poison_message(name: str, rid: int) -> str:
    return f"poison row id={rid} in {name}"


# ------------------------------------------------------------------ values


def value_for(vk: str, rid: int, j: int):
    """The value op ``j`` adds to row ``rid``, by value kind ``vk``."""
    if vk == "int":
        return rid * 7 + j
    if vk == "float":
        return rid / 7 + j
    if vk == "str":
        return f"v{j}-{rid}-" + "é" * (rid % 5)
    if vk == "bigstr":
        return f"L{rid}-" * (20000 if rid % 23 == 0 else 2)
    if vk == "bytes":
        return bytes([rid % 256, j % 256]) * (rid % 4)
    if vk == "bool":
        return rid % 3 == 0
    if vk == "nested":
        out = {"k": rid, "tag": f"t{rid % 4}"}
        if rid % 2:
            out["extra"] = [rid, rid + 1]
        return out
    if vk == "list":
        return [rid + k for k in range(rid % 4)]
    if vk == "list_nulls":
        return [None if (rid + k) % 3 == 0 else rid + k for k in range(rid % 4)]
    if vk == "nd":
        return np.full((2, 2), rid % 1000, np.int32)
    if vk == "nd_ragged":
        return np.arange((rid % 3) * 3, dtype=np.float64).reshape(rid % 3, 3) + rid
    if vk == "nd1":
        return np.arange(rid % 4, dtype=np.int64) + rid
    if vk == "none_sometimes":
        return None if rid % 4 == 0 else rid
    if vk == "ragged_key":
        return rid if rid % 3 == 0 else MISSING
    raise ValueError(f"unknown value kind {vk!r}")


VALUE_KINDS = ["int", "float", "str", "bigstr", "bytes", "bool", "nested", "list",
               "list_nulls", "nd", "nd_ragged", "nd1", "none_sometimes", "ragged_key"]


# ------------------------------------------------------------------ row ops


class RowFn:
    """``map`` / ``flat_map`` / ``filter`` UDF; ``apply`` is the healthy behaviour
    (what the oracle calls), ``__call__`` adds poison and faults."""

    def __init__(self, op: dict) -> None:
        self.op = op
        self.__name__ = op["name"]

    def __call__(self, row):
        if self.op["kind"] == "npid":
            return self.apply(row)
        rid = row["id"]
        fault_point(self.op, rid)
        poison = self.op.get("poison")
        if matches(poison, rid):
            how = poison["how"]
            if how == "raise":
                raise ValueError(poison_message(self.op["name"], rid))
            if how == "badvalue":
                bad = {"id": rid, self.op["name"]: Unrepresentable()}
                return [bad] if self.op["op"] == "flat_map" else bad
            if how == "notdict":
                return 5 if self.op["op"] == "flat_map" else [row]
        return self.apply(row)

    def apply(self, row):
        op, rid, j = self.op, row.get("id"), self.op["j"]
        kind = op["kind"]
        if kind == "add":
            out = dict(row)
            value = value_for(op["vk"], rid, j)
            if value is not MISSING:
                out[op["name"]] = value
            return out
        if kind == "drop":
            out = dict(row)
            if rid % 2 == 0:
                out.pop(op["key"], None)
            return out
        if kind == "replace":
            out = {"id": rid}
            value = value_for(op["vk"], rid, j)
            if value is not MISSING:
                out[op["name"]] = value
            return out
        if kind == "npid":  # from_numpy rows: the id is stored in the tensor
            return {"id": int(row["data"][0][0]), "data": row["data"]}
        if kind == "setpart":
            out = dict(row)
            out["p"] = part_value(op["style"], rid)
            return out
        if kind == "explode":
            count = (rid * op["a"] + op["b"]) % op["fan"]
            return [dict(row, id=rid * 8 + k, **{op["name"]: k}) for k in range(count)]
        if kind == "keep":
            return (rid * op["a"] + op["b"]) % op["m"] != 0
        raise ValueError(f"unknown row op kind {kind!r}")


PART_STRINGS = ["a", "b b", "c/d", "e=f", "ü%", "null", ""]


def part_value(style: str, rid: int):
    if style == "int":
        return rid % 3
    if style == "str":
        return PART_STRINGS[rid % len(PART_STRINGS)]
    if style == "str_nulls":
        return None if rid % 4 == 0 else PART_STRINGS[rid % 3]
    raise ValueError(style)


# ------------------------------------------------------------------ batch ops


def _ids(batch, fmt: str) -> np.ndarray:
    if fmt == "pyarrow":
        return batch.column("id").to_numpy()
    return np.asarray(batch["id"])


def _batch_apply(op: dict, batch, fmt: str, add_value):
    """The healthy batch op: add a column (``add_value(ids)``), filter or pass through."""
    ids = _ids(batch, fmt)
    kind = op["kind"]
    if kind == "sleep":
        time.sleep(op["seconds"])
        return batch
    if kind == "bfilter":
        mask = ids % op["m"] != op["r"]
        if fmt == "numpy":
            return {k: v[mask] for k, v in batch.items()}
        if fmt == "pandas":
            return batch[mask]
        return batch.filter(pa.array(mask))
    values = add_value(ids)
    name = op["name"]
    if fmt == "numpy":
        out = dict(batch)
        out[name] = values
        return out
    if fmt == "pandas":
        batch[name] = values
        return batch
    return batch.append_column(name, pa.array(values))


def _batch_faults(op: dict, batch, fmt: str):
    ids = _ids(batch, fmt)
    if in_worker() and op.get("kill") and op["kill"].get("where", "call") == "call":
        for rid in ids:
            fault_point(op, int(rid))
    poison = op.get("poison")
    bad = [int(i) for i in ids if matches(poison, int(i))]
    if bad:
        if poison["how"] == "raise":
            raise ValueError(poison_message(op["name"], bad[0]))
        if poison["how"] == "badlen":
            return {"id": ids, op["name"]: np.zeros(len(ids) + 1)}
    return None


class BatchFn:
    """A ``map_batches`` function (tasks): ``badd`` adds ``id*2+j``, ``bfilter`` drops
    rows, ``sleep`` slows the pipeline down."""

    def __init__(self, op: dict) -> None:
        self.op = op
        self.__name__ = op["name"]

    def __call__(self, batch):
        fmt = self.op["batch_format"]
        bad = _batch_faults(self.op, batch, fmt)
        if bad is not None:
            return bad
        return _batch_apply(self.op, batch, fmt, lambda ids: ids * 2 + self.op["j"])


class ActorBase:
    """A ``map_batches`` class (an actor pool): adds ``id + k`` (``k`` from the
    constructor); may die once while starting (``kill.where == "init"``)."""

    def __init__(self, op: dict, k: int) -> None:
        kill = op.get("kill")
        if kill and kill.get("where") == "init" and in_worker() and once(kill["flag"]):
            os.kill(os.getpid(), signal.SIGKILL)
        self.op, self.k = op, k

    def __call__(self, batch):
        fmt = self.op["batch_format"]
        bad = _batch_faults(self.op, batch, fmt)
        if bad is not None:
            return bad
        return _batch_apply(self.op, batch, fmt, lambda ids: ids + self.k)


# One importable class per op position, so an actor stage's label (its class name)
# names its op: MapBatches(Actor3).
for _j in range(16):
    globals()[f"Actor{_j}"] = type(f"Actor{_j}", (ActorBase,),
                                   {"__module__": __name__, "__qualname__": f"Actor{_j}"})
del _j


def actor_class(j: int) -> type:
    return globals()[f"Actor{j}"]


def oracle_batch_row(op: dict, row: dict) -> dict | None:
    """What a healthy batch op does to one row (None: the row is dropped)."""
    rid, kind = row["id"], op["kind"]
    if kind == "sleep":
        return row
    if kind == "bfilter":
        return row if rid % op["m"] != op["r"] else None
    out = dict(row)
    out[op["name"]] = rid + op["k"] if op["op"] == "actor" else rid * 2 + op["j"]
    return out


__all__ = ["RowFn", "BatchFn", "ActorBase", "actor_class", "value_for", "part_value",
           "oracle_batch_row", "poison_message", "Unrepresentable"]
