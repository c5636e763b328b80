"""examples/fresh_lookup.py: lookups through FreshCache stay within the staleness bound
while a writer thread keeps changing the SQLite table."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import fresh_lookup as fl  # noqa: E402


def test_required_version_is_the_newest_committed_before_a_time(tmp_path):
    writer = fl.Writer(str(tmp_path / "unused.db"), users=2)
    writer.log[1] += [(10.0, 1), (20.0, 2)]
    assert [writer.required_version(1, t) for t in (5.0, 10.0, 15.0, 25.0)] == [0, 1, 1, 2]
    assert writer.required_version(0, 100.0) == 0


def test_enriched_events_are_never_staler_than_the_bound(tmp_path):
    bound = 0.2
    summary = fl.main(events=20_000, max_staleness=bound, workdir=str(tmp_path), quiet=True)
    table = pq.read_table(summary["output"]).sort_by("event_id")
    assert summary["rows"] == 20_000
    assert table["event_id"].to_pylist() == list(range(20_000))
    users = table["user_id"].to_pylist()
    assert table["tier"].to_pylist() == [("gold", "silver", "bronze")[u % 3] for u in users]
    assert summary["writes"] > 0
    assert summary["violations"] == 0  # every served version was current within the bound
    cache = summary["cache"]
    assert cache["max_staleness_served"] <= bound
    assert cache["hits"] > 10 * cache["backend_reads"]  # most lookups never reach SQLite
    assert cache["updates"] + cache["invalidations"] > 0  # the change feed was followed
