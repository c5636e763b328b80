"""SQLiteTable and the lookup operator: left/inner joins, one deduplicated
batched query per micro-batch, and the staleness bound under a writer process."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pyarrow as pa
import pytest
from streambatch.connectors.lookup import FreshCache, SQLiteTable
from streambatch.executor.contract import TaskContext
from streambatch.operators.lookup import Lookup, LookupOp

import streambatch as sb

from .freshness import History

KEYS = list(range(40))


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "users.db")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, version INTEGER, name TEXT, score REAL)")
    conn.executemany("INSERT INTO users VALUES (?, 0, ?, ?)", [(k, f"n{k}", k / 2) for k in KEYS])
    conn.commit()
    conn.close()
    return path


STATEMENTS: list[str] = []


class TracedTable(SQLiteTable):
    """An SQLiteTable whose connections log every statement (thread workers share STATEMENTS)."""

    def connect(self):
        client = super().connect()
        client.conn.set_trace_callback(STATEMENTS.append)
        return client


def _fetches() -> list[str]:
    return [s for s in STATEMENTS if s.startswith('SELECT "id"') and 'FROM "users"' in s]


def test_left_and_inner_lookups_with_column_types(db):
    ds = sb.from_items([{"id": k} for k in (1, 2, 999, None)])
    left = ds.lookup(SQLiteTable(db, "users", key="id"), on="id", columns=["name", "score"])
    assert sorted(left.take_all(), key=lambda r: (r["id"] is None, r["id"] or 0)) == [
        {"id": 1, "name": "n1", "score": 0.5}, {"id": 2, "name": "n2", "score": 1.0},
        {"id": 999, "name": None, "score": None}, {"id": None, "name": None, "score": None}]
    schema = left.schema()
    assert schema.field("score").type == pa.float64() and schema.field("name").type == pa.string()
    inner = ds.lookup(SQLiteTable(db, "users", key="id"), on="id", how="inner")
    assert sorted(r["id"] for r in inner.take_all()) == [1, 2]
    assert set(inner.take_all()[0]) == {"id", "version", "name", "score"}


@pytest.mark.parametrize("declared, stored, asked", [("TEXT", "1", 1), ("INTEGER", 1, "1")])
@pytest.mark.parametrize("how", ["left", "inner"])
def test_a_key_sqlite_matches_by_conversion_fails_naming_the_types(tmp_path, declared,
                                                                    stored, asked, how):
    """SQLite matches a TEXT key '1' to the dataset's 1 (column affinity); the looked-up
    row was kept under '1' and looked for under 1: every row came out unmatched (nulls,
    or dropped by an inner lookup). Now an error naming both types."""
    path = str(tmp_path / "t.db")
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE users (id {declared} PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users VALUES (?, 'one')", (stored,))
    conn.commit()
    conn.close()
    ds = sb.from_items([{"id": asked}])
    with pytest.raises(TypeError, match=r"holds .*1.* \((str|int)\).*(int|str) key values"):
        ds.lookup(SQLiteTable(path, "users", key="id"), on="id", how=how).take_all()
    same = sb.from_items([{"id": stored}]).lookup(SQLiteTable(path, "users", key="id"), on="id")
    assert same.take_all() == [{"id": stored, "name": "one"}]


def test_one_deduplicated_query_per_micro_batch(db):
    STATEMENTS.clear()
    op = Lookup(None, table=TracedTable(db, "users", key="id"), on="id", cache=FreshCache(30.0))
    blocks = [pa.table({"id": [1, 2, 2, 3, 1, 500]}), pa.table({"id": [3, 4, 4, 5]}),
              pa.table({"id": [1, 2, 3, 4, 5]})]
    out = list(LookupOp(op).apply(iter(blocks), TaskContext("s", 0, "p0")))
    assert [t.num_rows for t in out] == [6, 4, 5]
    fetches = _fetches()
    assert len(fetches) == 2  # batch 3 is all hits
    assert fetches[0].endswith("IN (1,2,3,500)") and fetches[1].endswith("IN (4,5)")


def test_a_pipeline_makes_at_most_one_query_per_block(db):
    STATEMENTS.clear()
    items = [{"id": k % 10} for k in range(400)]
    ds = sb.from_items(items, override_num_blocks=4).lookup(
        TracedTable(db, "users", key="id"), on="id", columns=["name"], cache=FreshCache(30.0))
    rows = ds.take_all()
    assert len(rows) == 400 and all(r["name"] == f"n{r['id']}" for r in rows)
    assert 1 <= len(_fetches()) <= 4


def test_errors_name_the_problem(db):
    ds = sb.from_items([{"uid": 1}])
    with pytest.raises(Exception, match="lookup key column 'id' not in the batch"):
        ds.lookup(SQLiteTable(db, "users", key="id"), on="id").take_all()
    with pytest.raises(Exception, match="no table 'nope'"):
        sb.from_items([{"id": 1}]).lookup(SQLiteTable(db, "nope", key="id"), on="id").take_all()
    with pytest.raises(ValueError, match="how='outer'"):
        ds.lookup(SQLiteTable(db, "users", key="id"), on="uid", how="outer")


def _write_versions(path: str, seconds: float, seed: int) -> None:
    import random
    rng, versions = random.Random(seed), dict.fromkeys(KEYS, 0)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=OFF")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = rng.choice(KEYS)
        versions[key] += 1
        conn.execute("BEGIN IMMEDIATE")  # hold the write lock, then stamp the commit time
        conn.execute("UPDATE users SET version = ?, score = ? WHERE id = ?",
                     (versions[key], time.monotonic(), key))
        conn.execute("COMMIT")
        time.sleep(0.001)
    conn.close()


def test_served_values_stay_within_the_bound_under_a_writer_process(db):
    bound = 0.2
    cache = FreshCache(bound).open(SQLiteTable(db, "users", key="id", columns=("version",)))
    writer = mp.get_context("spawn").Process(target=_write_versions, args=(db, 1.5, 0))
    writer.start()
    served = []
    import random
    rng = random.Random(1)
    slowest_call = 0.0
    while writer.is_alive() or not served:
        batch = [rng.choice(KEYS) for _ in range(8)]
        called = time.monotonic()
        found = cache.get_many(batch)
        now = time.monotonic()
        slowest_call = max(slowest_call, now - called)
        served += [(k, found[k]["version"], now) for k in batch]
    writer.join()
    history = History()  # from the feed's own log: every version with its stamped time
    conn = sqlite3.connect(db)
    changes = cache.client.changes.replace('"', '""')
    for key, row in conn.execute(f'SELECT key, row FROM "{changes}" WHERE deleted = 0'):
        import json
        values = json.loads(row)
        history.add(key, values["version"], values["score"])
    worst = max(history.staleness(k, v, t) for k, v, t in served)
    s = cache.stats()
    assert len(history.times) == len(KEYS) and len(served) > 100
    assert worst <= bound, (worst, s)
    assert s["hits"] > 0 and s["feed_changes"] > 50 and s["updates"] + s["invalidations"] > 0
    # A fetched value counts as known current from the start of its read, so a read
    # that waited longer than the bound for the writer's lock sets the floor.
    assert s["max_staleness_served"] <= max(bound, slowest_call)


def test_polls_do_not_query_when_nothing_was_committed(db):
    STATEMENTS.clear()
    cache = FreshCache(10.0, poll_interval=0.0).open(TracedTable(db, "users", key="id"))
    for _ in range(5):
        cache.get_many([1])
    assert cache.stats()["feed_polls"] == 5
    polls = f'{cache.client.changes}" WHERE seq'
    assert not [s for s in STATEMENTS if polls in s]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE users SET name = 'x' WHERE id = 1")
    conn.commit()
    assert cache.get_many([1])[1]["name"] == "x"
    assert len([s for s in STATEMENTS if polls in s]) == 1
