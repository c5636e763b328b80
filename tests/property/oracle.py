"""The oracle: a plain-Python evaluation of a spec's pipeline over lists of dicts.

Row ops call the same UDF objects as the engine (their healthy ``apply``); batch ops
use their row-by-row meaning (``udfs.oracle_batch_row``). Poisoned rows are dead
letters (``on_error="skip"``) or make the job fail (``"raise"``).

A batch op that skips a failed batch sends every row of that batch to the dead
letters, and which rows share a batch depends on the layout. For such an op the
oracle takes the observed dead letters as the answer and checks them instead:
every poisoned row that reached the op is among them, and none is a row that did
not reach it; the rest of the evaluation then goes on from those.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.property import gen
from tests.property.udfs import RowFn, matches, oracle_batch_row


@dataclass
class Expected:
    rows: list[dict] = field(default_factory=list)
    dead: Counter = field(default_factory=Counter)  # (op name, input row id) -> count
    error_op: str | None = None  # the op whose poison makes the job fail
    problems: list[str] = field(default_factory=list)  # observed dead letters that cannot be right
    loose: bool = False  # a batch op's dead letters were taken from the observation


def source_rows(spec: dict) -> list[dict]:
    return gen.build_rows(spec["data"])


def evaluate(spec: dict, observed_dead: dict[str, set] | None = None) -> Expected:
    """The expected output of ``spec``; ``observed_dead`` maps an op name to the ids of
    the dead letters the engine reported for it (see the module doc)."""
    rows = source_rows(spec)
    exp = Expected()
    for op in spec["ops"]:
        name, poison = op["name"], op.get("poison")
        skip = op.get("on_error") == "skip"
        if op["op"] in ("map", "flat_map", "filter"):
            fn, out = RowFn(op), []
            for row in rows:
                if poison is not None and matches(poison, row["id"]):
                    if not skip:
                        exp.error_op = name
                        return exp
                    exp.dead[(name, row["id"])] += 1
                    continue
                result = fn.apply(row)
                if op["op"] == "map":
                    out.append(result)
                elif op["op"] == "flat_map":
                    out.extend(result)
                elif result:
                    out.append(row)
            rows = out
            continue
        poisoned = {r["id"] for r in rows if poison is not None and matches(poison, r["id"])}
        if poisoned and not skip:
            exp.error_op = name
            return exp
        if poisoned:
            dead_ids = set(poisoned)
            if observed_dead is not None:
                exp.loose = True
                seen = observed_dead.get(name, set())
                reached = {r["id"] for r in rows}
                missing = sorted(poisoned - seen)
                strays = sorted(seen - reached)
                if missing:
                    exp.problems.append(f"{name}: poisoned rows not in the dead letters: "
                                        f"{missing[:5]} ({len(missing)})")
                if strays:
                    exp.problems.append(f"{name}: dead letters for rows that never reached it: "
                                        f"{strays[:5]} ({len(strays)})")
                dead_ids |= seen & reached
            for rid in dead_ids:
                exp.dead[(name, rid)] += 1
            rows = [r for r in rows if r["id"] not in dead_ids]
        rows = [out for out in (oracle_batch_row(op, r) for r in rows) if out is not None]
    exp.rows = rows
    return exp
