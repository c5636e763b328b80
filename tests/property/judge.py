"""Judging a property case's output against the oracle: rows and dead letters counted,
and a short, stable signature for each kind of failure."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING

from tests.property import gen

if TYPE_CHECKING:
    from tests.property.harness import Outcome


def dead_counter(dead: list[dict]) -> tuple[Counter, list[str]]:
    """Dead letters as (op name, input row id) counts; unreadable ones listed apart."""
    counts: Counter = Counter()
    bad = []
    for d in dead:
        match = re.search(r"\(([^()]*)\)\s*$", d.get("op") or "")
        try:
            rid = json.loads(d["row"])["id"]
        except (ValueError, KeyError, TypeError):
            bad.append(f"op={d.get('op')!r} row={str(d.get('row'))[:80]!r}")
            continue
        counts[(match.group(1) if match else d.get("op"), rid)] += 1
    return counts, bad


def error_line(text: str) -> str:
    """The exception line of a formatted traceback (the last line naming an error)."""
    lines = [line for line in text.strip().splitlines()
             if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    return lines[-1] if lines else (text.strip().splitlines() or [""])[-1]


def unexpected_dead(dead: list[dict], expected: Counter) -> str:
    """A short account of dead letters the oracle did not expect, by op and error."""
    counts, _ = dead_counter(dead)
    extra = counts - expected
    if not extra:
        return ""
    errors: Counter = Counter()
    for d in dead:
        match = re.search(r"\(([^()]*)\)\s*$", d.get("op") or "")
        name = match.group(1) if match else d.get("op")
        try:
            rid = json.loads(d["row"])["id"]
        except (ValueError, KeyError, TypeError):
            rid = None
        if (name, rid) in extra:
            errors[(name, re.sub(r"\d+", "N", (d.get("error") or "")[:160]))] += 1
    return "; unexpected dead letters: " + "; ".join(f"{n}x {name}: {err}"
                                                     for (name, err), n in errors.most_common(3))


def observed_by_op(counts: Counter) -> dict[str, set]:
    out: dict[str, set] = {}
    for (name, rid) in counts:
        out.setdefault(name, set()).add(rid)
    return out


def key_kinds(spec: dict) -> dict[str, str]:
    kinds = {f: f"data:{f}" for f in gen.FEATURES}
    kinds["data"] = "data:numpy-tensor"
    for op in spec["ops"]:
        detail = op.get("vk") or op.get("batch_format") or op["kind"]
        kinds[op["name"]] = f"{op['op']}:{op['kind']}:{detail}"
    kinds["p"] = "partition"
    return kinds


def diagnose_rows(expected: list[str], actual: list[str], kinds: dict[str, str]) -> tuple[str, str]:
    """(signature, message) for a row mismatch, matching rows by their unique id."""
    def by_id(keys):
        out: dict = {}
        for k in keys:
            row = json.loads(k)
            out.setdefault(row.get("id"), []).append(row)
        return out

    exp, act = by_id(expected), by_id(actual)
    missing = sorted(set(exp) - set(act), key=str)
    extra = sorted(set(act) - set(exp), key=str)
    dup = sorted((i for i in act if len(act[i]) > len(exp.get(i, []))), key=str)
    differ, diff_keys, example = 0, Counter(), ""
    for rid in set(exp) & set(act):
        e, a = exp[rid][0], act[rid][0]
        if e != a:
            differ += 1
            keys = sorted(k for k in set(e) | set(a) if e.get(k) != a.get(k))
            diff_keys.update(kinds.get(k, k) for k in keys)
            if not example:
                k = keys[0]
                example = (f"; e.g. id {rid} key {k!r}: expected {str(e.get(k))[:120]} "
                           f"got {str(a.get(k))[:120]}")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing")
    if extra:
        parts.append(f"{len(extra)} unexpected")
    if dup:
        parts.append(f"{len(dup)} duplicated")
    if differ:
        parts.append(f"{differ} differ in {sorted(diff_keys)}")
    signature = "rows: " + ", ".join(p.split(" ", 1)[1] if p[0].isdigit() else p for p in parts)
    message = (f"expected {len(expected)} rows, got {len(actual)}: " + ", ".join(parts)
               + (f" (missing ids {missing[:5]})" if missing else "")
               + (f" (unexpected ids {extra[:5]})" if extra else "")
               + (f" (duplicated ids {dup[:5]})" if dup else "") + example)
    return signature, message


def check_rows(outcome: Outcome, spec: dict, expected: list[str], actual: list[str],
               where: str) -> None:
    if Counter(expected) != Counter(actual):
        signature, message = diagnose_rows(expected, actual, key_kinds(spec))
        outcome.fail("rows", f"{where}: {message}", f"{signature} ({where})")


def check_dead(outcome: Outcome, expected: Counter, dead: list[dict], where: str) -> None:
    counts, bad = dead_counter(dead)
    if bad:
        outcome.fail("dead_letters", f"{where}: unreadable dead letters: {bad[:3]}")
    if counts != expected:
        missing = expected - counts
        extra = counts - expected
        outcome.fail("dead_letters", f"{where}: expected {sum(expected.values())}, got "
                     f"{sum(counts.values())}; missing {sorted(missing)[:5]} "
                     f"({sum(missing.values())}), unexpected {sorted(extra)[:5]} "
                     f"({sum(extra.values())}){unexpected_dead(dead, expected)}")


