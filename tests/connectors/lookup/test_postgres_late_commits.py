"""PostgresTable's feed numbers a change when it is written, not when it commits: a
writer can commit a change numbered below the cache's cursor (a hole the cache gave
up on, or a writer running when the cache attached), where no poll looks. The cache
must then still never serve a value older than its bound. Each test drives a writer
transaction step by step (update, commit) against a manual clock."""

from __future__ import annotations

import pytest
from streambatch.connectors.lookup import FreshCache, PostgresTable
from streambatch.connectors.lookup.identifiers import derived_name
from streambatch.connectors.lookup.simulated import SimClock

BOUND = 1.0  # gap_timeout = BOUND / 2
TABLE = "late_commits"


@pytest.fixture
def db(postgres_dsn):
    """An autocommit connection, the table (k -> v = 0 for k in 1..3) and its dsn."""
    import psycopg
    conn = psycopg.connect(postgres_dsn, autocommit=True)
    changes = derived_name("sb_changes_", "public", TABLE)
    conn.execute(f'DROP TABLE IF EXISTS {TABLE}; DROP TABLE IF EXISTS "{changes}"')
    conn.execute(f"CREATE TABLE {TABLE} (k bigint PRIMARY KEY, v bigint)")
    conn.execute(f"INSERT INTO {TABLE} SELECT g, 0 FROM generate_series(1, 3) g")
    yield conn
    conn.close()


def _writer(postgres_dsn: str):
    """A connection whose writes stay in one open transaction until it commits."""
    import psycopg
    return psycopg.connect(postgres_dsn, autocommit=False)


def _cache(clock: SimClock) -> FreshCache:
    """A cache on ``clock`` that polls at every lookup."""
    return FreshCache(BOUND, clock=clock, poll_interval=0.0)


def _serve_until(cache: FreshCache, clock: SimClock, until: float, committed_at: float) -> list:
    """Look up keys 1 and 2 every 0.3 s up to ``until``; each served (time, v of key 1).
    After ``committed_at + BOUND`` key 1 must be served as committed (v = 1)."""
    served = []
    while clock() < until:
        clock.advance(0.3)
        v = cache.get_many([1, 2])[1]["v"]
        served.append((round(clock(), 2), v))
        assert clock() <= committed_at + BOUND or v >= 1, served
    return served


def test_a_hole_given_up_on_and_committed_later_is_not_served_past_the_bound(postgres_dsn, db):
    """Writer A takes a number and stays open; B commits a later one. The cache gives up
    on A's hole after gap_timeout; key 1 refetched while A is open holds the old value.
    A then commits below the cursor: before, polls never returned it and kept trusting
    the entry (v = 0 served forever, while stats reported staleness within the bound)."""
    clock = SimClock()
    cache = _cache(clock).open(PostgresTable(postgres_dsn, TABLE, key="k"))
    assert cache.get_many([1, 2]) == {1: {"v": 0}, 2: {"v": 0}}
    a = _writer(postgres_dsn)
    a.execute(f"UPDATE {TABLE} SET v = 1 WHERE k = 1")  # its number is taken now
    db.execute(f"UPDATE {TABLE} SET v = 1 WHERE k = 2")  # a later number, committed
    clock.advance(0.1)
    assert cache.get_many([1, 2]) == {1: {"v": 0}, 2: {"v": 1}}
    clock.advance(0.6)  # the hole has been open longer than gap_timeout: given up
    assert cache.get_many([1, 2])[1] == {"v": 0} and cache.stats()["feed_gaps"] == 1
    clock.advance(0.4)  # key 1's lease ran out: refetched while A is still open
    reads = cache.stats()["backend_reads"]
    assert cache.get_many([1])[1] == {"v": 0} and cache.stats()["backend_reads"] == reads + 1
    _committed_then_trusted(cache, clock, a, until=5.0)


def _committed_then_trusted(cache, clock, writer, until: float) -> None:
    """``writer`` commits: its value is served within the bound up to ``until``; once it
    has ended the feed is trusted again (no refetch per lease for 4 s more)."""
    writer.commit()
    writer.close()
    served = _serve_until(cache, clock, until=until, committed_at=clock())
    assert served[-1][1] == 1
    reads = cache.stats()["backend_reads"]
    _serve_until(cache, clock, until=until + 4.0, committed_at=0.0)
    assert cache.stats()["backend_reads"] == reads
    cache.close()


def test_a_writer_running_when_the_cache_attached_is_waited_for(postgres_dsn, db):
    """A has taken a number and B a later, committed one when the cache attaches at B's
    head: A's change is below the cursor from the start. Before, key 1 fetched while A
    was open kept v = 0 for good."""
    clock = SimClock()
    client = PostgresTable(postgres_dsn, TABLE, key="k").connect()  # the feed is installed
    a = _writer(postgres_dsn)
    a.execute(f"UPDATE {TABLE} SET v = 1 WHERE k = 1")
    db.execute(f"UPDATE {TABLE} SET v = 1 WHERE k = 2")
    cache = _cache(clock).attach(client)
    assert cache.get_many([1, 2]) == {1: {"v": 0}, 2: {"v": 1}}
    clock.advance(0.2)
    _committed_then_trusted(cache, clock, a, until=4.0)


def test_a_rolled_back_hole_costs_one_lease_at_most(postgres_dsn, db):
    """A hole whose writer rolled back never fills: after gap_timeout the cache gives up
    on it and, no writer being left, trusts the feed again at once."""
    clock = SimClock()
    cache = _cache(clock).open(PostgresTable(postgres_dsn, TABLE, key="k"))
    cache.get_many([1, 2])
    a = _writer(postgres_dsn)
    a.execute(f"UPDATE {TABLE} SET v = 9 WHERE k = 1")
    db.execute(f"UPDATE {TABLE} SET v = 1 WHERE k = 2")
    a.rollback()
    a.close()
    clock.advance(0.1)
    assert cache.get_many([1, 2]) == {1: {"v": 0}, 2: {"v": 1}}
    clock.advance(0.6)
    cache.get_many([1, 2])
    assert cache.stats()["feed_gaps"] == 1
    clock.advance(0.6)
    cache.get_many([1, 2])  # key 1's lease from before the gap ran out: refetched once
    reads = cache.stats()["backend_reads"]
    db.execute(f"UPDATE {TABLE} SET v = 2 WHERE k = 1")
    served = _serve_until(cache, clock, until=6.0, committed_at=-BOUND)  # every one v = 2
    assert {v for _, v in served} == {2}
    assert cache.stats()["backend_reads"] <= reads + 1  # the feed's change, no lease refetch
    cache.close()


@pytest.mark.parametrize("change", ["truncate", "made again"])
def test_a_truncate_or_a_table_made_again_is_not_trusted_to_the_feed(postgres_dsn, db, change):
    """No row trigger fires for TRUNCATE, and DROP + CREATE (to_sql replace) drops the
    trigger: the feed looked quiet and the old rows were served for the whole job."""
    clock = SimClock()
    cache = _cache(clock).open(PostgresTable(postgres_dsn, TABLE, key="k"))
    assert cache.get_many([1, 2]) == {1: {"v": 0}, 2: {"v": 0}}
    if change == "truncate":
        db.execute(f"TRUNCATE {TABLE}")
    else:
        db.execute(f"DROP TABLE {TABLE}")
        db.execute(f"CREATE TABLE {TABLE} (k bigint PRIMARY KEY, v bigint)")
    db.execute(f"INSERT INTO {TABLE} VALUES (1, 5)")
    for _ in range(5):  # past the bound, one poll per lookup
        clock.advance(0.3)
        got = cache.get_many([1, 2])
    assert got == {1: {"v": 5}}
    db.execute(f"UPDATE {TABLE} SET v = 6 WHERE k = 1")  # the feed works again
    for _ in range(5):
        clock.advance(0.3)
        got = cache.get_many([1, 2])
    assert got == {1: {"v": 6}}
    cache.close()
