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


def _served_after(path: str, writer, change, columns=None, bound: float = 0.15) -> dict:
    """What a cache serves for key 1 once ``change`` ran on ``writer``, read past the
    bound (a poll happens inside each read)."""
    cache = FreshCache(max_staleness=bound).open(SQLiteTable(path, "t", key="k",
                                                             columns=columns))
    cache.get_many([1])
    change(writer)
    deadline = time.monotonic() + 3 * bound
    while time.monotonic() < deadline:
        got = cache.get_many([1])
    cache.close()
    return got


def _table(tmp_path, name: str):
    path = str(tmp_path / f"{name}.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
    writer.execute("INSERT INTO t VALUES (1, 'old')")
    return path, writer


def test_a_table_made_again_is_not_trusted_to_its_old_feed(tmp_path):
    """DROP + CREATE (pandas' to_sql(if_exists='replace')) removed the feed's triggers:
    the feed looked quiet and the old row was served for as long as the job ran."""
    path, writer = _table(tmp_path, "rebuilt")

    def rebuild(w):
        w.execute("DROP TABLE t")
        w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v)")
        w.execute("INSERT INTO t VALUES (1, 'new')")

    assert _served_after(path, writer, rebuild) == {1: {"v": "new"}}
    assert _served_after(path, writer, lambda w: w.execute("UPDATE t SET v = 'newer'")) == \
        {1: {"v": "newer"}}  # the feed was installed again


def test_a_column_added_after_an_earlier_jobs_feed_is_carried(tmp_path):
    """An earlier job's trigger listed the columns of its time: a column added later came
    through the feed as null, and the cache served null as the current value."""
    path, writer = _table(tmp_path, "added")
    SQLiteTable(path, "t", key="k").connect().close()  # an earlier job's feed
    writer.execute("ALTER TABLE t ADD COLUMN price REAL")
    writer.execute("UPDATE t SET price = 1.0")
    got = _served_after(path, writer, lambda w: w.execute("UPDATE t SET v = 'x', price = 2.0"),
                        columns=["v", "price"])
    assert got == {1: {"v": "x", "price": 2.0}}


def test_the_feed_never_breaks_the_applications_own_writes_of_bytes(tmp_path):
    """A column of no declared type holding bytes: the feed's json_object failed, and with
    it the application's INSERT (JSON cannot hold BLOB values)."""
    path, writer = _table(tmp_path, "blobs")
    got = _served_after(path, writer, lambda w: w.execute("UPDATE t SET v = ?", (b"\x00\x01",)))
    assert got == {1: {"v": b"\x00\x01"}}  # fetched: the feed carried no row for it
    writer.execute("INSERT INTO t VALUES (2, ?)", (b"\x02",))
    assert writer.execute("SELECT v FROM t WHERE k = 2").fetchone() == (b"\x02",)


@pytest.mark.parametrize("write", [
    "INSERT OR REPLACE INTO t VALUES (2, 'a@x', 'two')",
    "REPLACE INTO t VALUES (2, 'a@x', 'two')",
    "UPDATE OR REPLACE t SET email = 'a@x' WHERE k = 3",
])
def test_a_row_replaced_through_another_unique_column_is_seen_deleted(tmp_path, write):
    """A REPLACE that collides on a UNIQUE column other than the key deletes the other
    row, with no delete trigger (recursive_triggers is off by default): the cache served
    the deleted row for the whole job."""
    path = str(tmp_path / "replace.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, email TEXT UNIQUE, v TEXT)")
    writer.execute("INSERT INTO t VALUES (1, 'a@x', 'one'), (3, 'c@x', 'three')")
    got = _served_after(path, writer, lambda w: w.execute(write), columns=["v"])
    assert got == {}
    rows = writer.execute("SELECT * FROM t ORDER BY k").fetchall()
    writer.execute("INSERT OR IGNORE INTO t VALUES (9, 'a@x', 'ignored')")  # (no change)
    assert writer.execute("SELECT * FROM t ORDER BY k").fetchall() == rows
