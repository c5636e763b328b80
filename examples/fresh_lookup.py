"""Fresh lookups: enrich a stream of events from an SQLite table that changes while it runs.

A writer thread keeps updating users' balances (each write bumps the row's
``version``) while a pipeline enriches click events with
``ds.lookup(SQLiteTable(...), on="user_id", cache=FreshCache(max_staleness=...))``.
The cache serves most lookups from memory, follows the table's change feed
(SQLite triggers) to update or invalidate the entries that change, and never
serves a value older than the bound.

The program checks that promise from the output alone: each event is stamped
just before its lookup (``stamped_at``); the writer logs when each version was
committed. The version an event got must be at least the newest version
committed before ``stamped_at - max_staleness`` (a sound check: the lookup ran
after the stamp). ``violations`` counts events that broke it.

Run: ``python examples/fresh_lookup.py --events 50000 --max-staleness 0.2``
"""

from __future__ import annotations

import argparse
import bisect
import os
import sqlite3
import tempfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq
from streambatch.connectors.lookup import FreshCache, SQLiteTable

import streambatch as sb

USERS = 200


def create_users(path: str, users: int) -> None:
    """The ``users`` table: ``user_id``, ``tier``, ``balance``, ``version`` (all at 0)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    conn.execute("CREATE TABLE users (user_id INTEGER PRIMARY KEY, tier TEXT, balance REAL, "
                 "version INTEGER NOT NULL)")
    conn.executemany("INSERT INTO users VALUES (?, ?, 0.0, 0)",
                     [(u, ("gold", "silver", "bronze")[u % 3]) for u in range(users)])
    conn.commit()
    conn.close()


class Writer(threading.Thread):
    """Updates a random user's balance and version every ``interval`` seconds until stopped;
    ``log[user]`` is the list of (commit time, version), times taken after each commit."""

    def __init__(self, path: str, users: int, interval: float = 0.002, seed: int = 0) -> None:
        super().__init__(daemon=True, name="users-writer")
        self.path, self.users, self.interval = path, users, interval
        self.rng = np.random.default_rng(seed)
        self.log: dict[int, list[tuple[float, int]]] = {u: [(-np.inf, 0)] for u in range(users)}
        self.writes = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            versions = [0] * self.users
            while not self.stop.is_set():
                user = int(self.rng.integers(self.users))
                versions[user] += 1
                conn.execute("UPDATE users SET balance = ?, version = ? WHERE user_id = ?",
                             (float(self.rng.normal(100, 30)), versions[user], user))
                self.log[user].append((time.monotonic(), versions[user]))  # after the commit
                self.writes += 1
                self.stop.wait(self.interval)
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported by main
            self.error = exc

    def required_version(self, user: int, at: float) -> int:
        """The newest version of ``user`` surely committed by time ``at``."""
        times = [t for t, _ in self.log[user]]
        return self.log[user][bisect.bisect_right(times, at) - 1][1]


def stamp(batch: dict) -> dict:
    """Events: a user per event and the time just before its lookup."""
    ids = batch["id"]
    return {"event_id": ids, "user_id": (ids * 7919) % USERS,
            "stamped_at": np.full(len(ids), time.monotonic())}


def paced(batch: dict) -> dict:
    """Events arrive over time, as from a queue: 2 ms per batch."""
    time.sleep(0.002)
    return batch



def build(db_path: str, events: int, cache: FreshCache) -> sb.Dataset:
    """The pipeline: events -> stamp -> lookup(users) -> enriched events."""
    return (sb.range(events, override_num_blocks=max(1, events // 5000))
            .map_batches(paced, batch_format="numpy", batch_size=100, releases_gil=True)
            .map_batches(stamp, batch_format="numpy", batch_size=100, releases_gil=True)
            .lookup(SQLiteTable(db_path, "users", key="user_id"), on="user_id",
                    columns=["tier", "balance", "version"], cache=cache))


def main(events: int = 50_000, max_staleness: float = 0.2, workdir: str | None = None,
         quiet: bool = False) -> dict:
    """Run the pipeline while the writer updates the table; return a summary with the
    cache's counts and the freshness check."""
    workdir = workdir or tempfile.mkdtemp(prefix="streambatch-lookup-")
    db_path = os.path.join(workdir, "users.db")
    if os.path.exists(db_path):
        os.remove(db_path)
    create_users(db_path, USERS)
    cache = FreshCache(max_staleness=max_staleness)
    writer = Writer(db_path, USERS)
    writer.start()
    out_dir = os.path.join(workdir, "enriched")
    start = time.perf_counter()
    try:
        files = build(db_path, events, cache).write_parquet(out_dir)
    finally:
        writer.stop.set()
        writer.join()
    seconds = time.perf_counter() - start
    if writer.error is not None:
        raise writer.error
    table = pq.read_table(out_dir)
    users = table["user_id"].to_pylist()
    stamped = table["stamped_at"].to_pylist()
    served = table["version"].to_pylist()
    required = [writer.required_version(u, t - max_staleness) for u, t in zip(users, stamped,
                                                                                strict=True)]
    stats = cache.stats()
    summary = {"rows": table.num_rows, "files": len(files), "seconds": seconds,
               "writes": writer.writes,
               "violations": sum(s < r for s, r in zip(served, required, strict=True)),
               "events_behind_latest": sum(s < writer.required_version(u, t)
                                           for u, t, s in zip(users, stamped, served,
                                                              strict=True)),
               "cache": {k: stats[k] for k in ("hits", "cold_misses", "stale_misses",
                                               "backend_reads", "updates", "invalidations",
                                               "hit_ratio", "max_staleness_served")},
               "output": out_dir}
    if not quiet:
        c = summary["cache"]
        print(f"Enriched {summary['rows']:,} events in {seconds:.2f}s while {writer.writes:,} "
              f"writes changed the table")
        print(f"cache: hit ratio {c['hit_ratio']:.1%}, {c['backend_reads']:,} backend queries, "
              f"{c['updates']:,} updates, {c['invalidations']:,} invalidations, largest "
              f"staleness served {c['max_staleness_served'] * 1000:.0f} ms (bound "
              f"{max_staleness * 1000:.0f} ms)")
        print(f"events served a version older than the bound allows: {summary['violations']}; "
              f"served an older-than-latest (but within-bound) version: "
              f"{summary['events_behind_latest']:,}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--max-staleness", type=float, default=0.2)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    main(args.events, args.max_staleness, args.workdir)
