"""RedisTable and PostgresTable against real servers on loopback: rows, the
change feed, batched fetches, and the staleness bound under a concurrent writer."""

from __future__ import annotations

import threading
import time

import pytest
from streambatch.connectors.lookup import FreshCache, PostgresTable, RedisTable
from streambatch.connectors.lookup.identifiers import derived_name

import streambatch as sb

from .freshness import History, read_and_check, writer_thread

KEYS = list(range(50))
BOUND = 0.25


@pytest.fixture
def redis_rows(redis_url):
    import redis
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    for k in KEYS:
        r.hset(f"u:{k}", mapping={"version": 0, "name": f"n{k}"})
    yield r
    r.close()


@pytest.fixture
def pg_rows(postgres_dsn):
    import psycopg
    conn = psycopg.connect(postgres_dsn, autocommit=True)
    changes = derived_name("sb_changes_", "public", "users")
    conn.execute(f'DROP TABLE IF EXISTS users; DROP TABLE IF EXISTS "{changes}"')
    conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, version bigint, name text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO users VALUES (%s, 0, %s)", [(k, f"n{k}") for k in KEYS])
    yield conn
    conn.close()


def test_redis_rows_feed_and_one_round_trip_per_batch(redis_url, redis_rows):
    table = RedisTable(redis_url, prefix="u:", key="id", key_type=int, schema={"version": int})
    cache = FreshCache(5.0, poll_interval=0.0).open(table)
    assert cache.get_many([1, 2, 999]) == {1: {"version": 0, "name": "n1"},
                                          2: {"version": 0, "name": "n2"}}
    execs = redis_rows.info("commandstats").get("cmdstat_exec", {}).get("calls", 0)
    redis_rows.hset("u:1", "version", 7)
    redis_rows.delete("u:2")
    found = cache.get_many([1, 2, 3, 4, 5])
    assert found[1]["version"] == 7 and 2 not in found
    assert cache.stats()["feed_changes"] == 2
    # misses 3, 4, 5 and any refetch of 1/2: at most one MULTI/EXEC each for the poll and the batch
    assert redis_rows.info("commandstats")["cmdstat_exec"]["calls"] - execs <= 2
    with pytest.raises(TypeError, match="key_type=str"):
        cache.get_many(["1"])
    cache.close()


def test_redis_served_values_stay_within_the_bound_under_a_concurrent_writer(redis_url, redis_rows):
    import redis
    writer = redis.Redis.from_url(redis_url)
    history, stop = History(), threading.Event()
    thread = writer_thread(lambda k, v: writer.hset(f"u:{k}", "version", v), KEYS, history, stop)
    table = RedisTable(redis_url, prefix="u:", key="id", key_type=int, columns=("version",),
                       schema={"version": int})
    cache = FreshCache(BOUND).open(table)
    try:
        result = read_and_check(cache, KEYS, history, seconds=1.5)
    finally:
        stop.set()
        thread.join()
        writer.close()
        cache.close()
    s = cache.stats()
    assert result["served"] > 100 and result["worst"] <= BOUND, (result, s)
    assert s["feed_changes"] > 50 and s["hits"] > 0


def test_redis_feed_reset_falls_back_to_the_lease(redis_url, redis_rows):
    table = RedisTable(redis_url, prefix="u:", key="id", key_type=int, schema={"version": int})
    cache = FreshCache(5.0, poll_interval=0.0).open(table)
    cache.get_many([1])
    redis_rows.client_kill_filter(_type="pubsub")  # the subscriber connection drops
    redis_rows.hset("u:1", "version", 3)           # ...and this notification is lost
    cache.get_many([2])                            # the poll sees the reset
    assert cache.stats()["feed_gaps"] == 1
    cache.max_staleness = 1e-6                      # entries from before the reset: lease only
    assert cache.get_many([1])[1]["version"] == 3
    cache.close()


def test_postgres_rows_feed_and_one_query_per_batch(postgres_dsn, pg_rows):
    cache = FreshCache(5.0, poll_interval=0.0).open(PostgresTable(postgres_dsn, "users", key="id"))
    assert cache.get_many([1, 999]) == {1: {"version": 0, "name": "n1"}}
    reads = cache.stats()["backend_reads"]
    pg_rows.execute("UPDATE users SET version = 5 WHERE id = 1")
    pg_rows.execute("DELETE FROM users WHERE id = 2")
    found = cache.get_many([1, 2, 3, 4])
    assert found == {1: {"version": 5, "name": "n1"}, 3: {"version": 0, "name": "n3"},
                     4: {"version": 0, "name": "n4"}}
    s = cache.stats()
    assert s["backend_reads"] == reads + 1 and s["feed_changes"] == 2
    assert s["updates"] + s["invalidations"] == 1  # key 1 was cached; key 2 was not
    cache.close()


def test_postgres_served_values_stay_within_the_bound_under_a_concurrent_writer(postgres_dsn, pg_rows):
    import psycopg
    writer = psycopg.connect(postgres_dsn, autocommit=True)
    history, stop = History(), threading.Event()
    table = PostgresTable(postgres_dsn, "users", key="id", columns=("version",))
    cache = FreshCache(BOUND).open(table)  # installs the changelog before the writer starts
    thread = writer_thread(lambda k, v: writer.execute(
        "UPDATE users SET version = %s WHERE id = %s", (v, k)), KEYS, history, stop)
    try:
        result = read_and_check(cache, KEYS, history, seconds=1.5)
    finally:
        stop.set()
        thread.join()
        writer.close()
        cache.close()
    s = cache.stats()
    assert result["served"] > 100 and result["worst"] <= BOUND, (result, s)
    assert s["feed_changes"] > 50 and s["hits"] > 0


def test_dataset_lookup_against_postgres_inner_join(postgres_dsn, pg_rows):
    ds = sb.from_items([{"id": k, "x": k * 10} for k in (1, 2, 3, 777)])
    out = ds.lookup(PostgresTable(postgres_dsn, "users", key="id"), on="id", how="inner",
                    columns=["name"], cache=FreshCache(1.0)).take_all()
    assert sorted(out, key=lambda r: r["id"]) == [
        {"id": 1, "x": 10, "name": "n1"}, {"id": 2, "x": 20, "name": "n2"},
        {"id": 3, "x": 30, "name": "n3"}]


def _served_after_redis(redis_url, writer, change, bound: float = 0.15, **table) -> dict:
    """What a cache on the Redis table serves for its keys once ``change`` ran, read
    past the bound (a poll happens inside each read)."""
    spec = dict(prefix="u:", key="id", key_type=int, schema={"version": int}) | table
    keys = spec.pop("keys", [1])
    cache = FreshCache(bound).open(RedisTable(redis_url, **spec))
    cache.get_many(keys)
    change(writer)
    deadline = time.monotonic() + 3 * bound
    while time.monotonic() < deadline:
        got = cache.get_many(keys)
    cache.close()
    return got


@pytest.mark.parametrize("change", ["flushdb", "flushall", "swapdb"])
def test_redis_flushes_that_notify_no_key_are_not_trusted_to_the_feed(redis_url, redis_rows,
                                                                      change):
    """FLUSHDB, FLUSHALL and SWAPDB send no keyspace notification: the flushed rows were
    served for the whole job."""
    def flush(r):
        {"flushdb": r.flushdb, "flushall": r.flushall, "swapdb": lambda: r.swapdb(0, 1)}[change]()
    try:
        assert _served_after_redis(redis_url, redis_rows, flush) == {}
    finally:
        redis_rows.swapdb(0, 1) if change == "swapdb" else None


def test_redis_notifications_switched_off_are_not_trusted_to_the_feed(redis_url, redis_rows):
    def off_then_write(r):
        r.config_set("notify-keyspace-events", "")
        r.hset("u:1", "version", 9)
    try:
        got = _served_after_redis(redis_url, redis_rows, off_then_write)
    finally:
        redis_rows.config_set("notify-keyspace-events", "KEA")
    assert got[1]["version"] == 9


def test_redis_bytes_keys_and_a_prefix_with_glob_characters(redis_url, redis_rows):
    """key_type=bytes looked up b"u:b'abc'" (another row, silently) and the feed failed on
    its first change; a prefix holding [ ] matched other keys' notifications only."""
    redis_rows.hset(b"u:abc", "version", 1)
    redis_rows.hset("u:b'abc'", "version", 666)
    got = _served_after_redis(redis_url, redis_rows,
                              lambda r: r.hset(b"u:abc", "version", 2),
                              key_type=bytes, keys=[b"abc"])
    assert got == {b"abc": {"version": 2}}
    redis_rows.hset("t[1]:5", "version", 1)
    got = _served_after_redis(redis_url, redis_rows, lambda r: r.hset("t[1]:5", "version", 2),
                              prefix="t[1]:", keys=[5])
    assert got == {5: {"version": 2}}


def test_a_redis_row_past_its_ttl_is_not_served(redis_url, redis_rows):
    """Redis announces an expiry when it reclaims the key, which can be minutes late (or
    never, with notifications off): the row was served for the whole lease."""
    cache = FreshCache(30.0).open(RedisTable(redis_url, prefix="u:", key="id", key_type=int,
                                             schema={"version": int}))
    redis_rows.pexpire("u:1", 300)
    assert cache.get_many([1, 2])[1]["version"] == 0
    redis_rows.config_set("notify-keyspace-events", "")  # (no notification of the expiry)
    try:
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            got = cache.get_many([1, 2])
    finally:
        redis_rows.config_set("notify-keyspace-events", "KEA")
        cache.close()
    assert 1 not in got and got[2]["version"] == 0
