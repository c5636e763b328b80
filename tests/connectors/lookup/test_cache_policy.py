"""The invalidate/update decision, the per-key counters and sketch bounds, and
the cache's bookkeeping (stats, capacity, policies)."""

from __future__ import annotations

import random

import pytest
from streambatch.connectors.lookup import FreshCache, should_invalidate
from streambatch.connectors.lookup.simulated import SimClock, SimulatedTable
from streambatch.connectors.lookup.sketch import CountMinSketch, KeyCounters

COSTS_REFETCH = {"miss": 1.0, "update": 1.0, "invalidate": 0.1}  # an update costs a refetch


def test_the_rule_invalidates_iff_expected_writes_times_update_cost_exceeds_miss_plus_invalidate():
    assert should_invalidate(1.2, 1.0, 1.0, 0.1)        # 1.2 > 1.1
    assert not should_invalidate(1.0, 1.0, 1.0, 0.1)    # 1.0 <= 1.1
    assert not should_invalidate(50.0, 1e-3, 1.0, 0.0)  # a carried row is cheap: update
    assert should_invalidate(None, 1e-9, 1.0, 0.0)      # never read: invalidate


def _cache_with(reads: int, writes_before: int, costs: dict):
    clock = SimClock()
    table = SimulatedTable(clock, keys=["k"], carries_rows=True)
    cache = FreshCache(10.0, "adaptive", clock=clock, poll_interval=0.0, costs=costs).attach(table)
    for _ in range(reads):
        cache.get_many(["k"])
    for _ in range(writes_before):
        cache._counters.write("k")
    table.write("k")
    cache.poll()
    return cache, table


def test_a_key_read_more_often_than_written_is_updated_in_place():
    cache, table = _cache_with(reads=10, writes_before=0, costs=COSTS_REFETCH)
    s = cache.stats()
    assert (s["updates"], s["invalidations"]) == (1, 0)
    assert cache.get_many(["k"]) == {"k": {"version": 1}}


def test_a_key_written_more_often_than_read_is_invalidated():
    cache, table = _cache_with(reads=1, writes_before=5, costs=COSTS_REFETCH)
    s = cache.stats()
    assert (s["updates"], s["invalidations"]) == (0, 1)
    reads = s["backend_reads"]
    assert cache.get_many(["k"]) == {"k": {"version": 1}}
    assert cache.stats()["stale_misses"] == 1 and cache.stats()["backend_reads"] == reads + 1


def test_an_update_without_a_carried_row_is_one_batched_refetch():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(5), carries_rows=False)
    cache = FreshCache(10.0, clock=clock, poll_interval=0.0,
                       costs={"miss": 1.0, "update": 0.01, "invalidate": 0.1}).attach(table)
    for _ in range(3):
        cache.get_many(list(range(5)))
    before = table.fetches
    for k in range(5):
        table.write(k)
    cache.poll()
    assert table.fetches == before + 1 and cache.stats()["updates"] == 5
    assert cache.get_many(list(range(5))) == {k: {"version": 1} for k in range(5)}
    assert table.fetches == before + 1  # served from the refreshed entries


def test_measured_costs_are_moving_averages_of_real_operations():
    clock = SimClock()
    cache = FreshCache(10.0, clock=clock).attach(SimulatedTable(clock, keys=range(100)))
    for i in range(20):
        cache.get_many([i])
    c = cache.costs()
    assert 0 < c["miss"] < 0.1 and c["refetch"] == c["miss"]


def test_count_min_sketch_never_underestimates_and_stays_within_its_bound():
    rng = random.Random(0)
    sketch = CountMinSketch(width=272, depth=5)  # eps = e/272 = 1 %, delta = e^-5 < 1 %
    truth: dict = {}
    for _ in range(20_000):
        key = int(rng.paretovariate(1.2)) % 3000
        sketch.add(key)
        truth[key] = truth.get(key, 0) + 1
    over = [sketch.estimate(k) - n for k, n in truth.items()]
    assert min(over) >= 0
    within = sum(o <= sketch.error_bound() for o in over) / len(over)
    assert within >= 0.99
    assert sketch.error_bound() == pytest.approx(2.718281828 / 272 * 20_000)


def test_counters_are_exact_for_hot_keys_and_bounded_in_memory():
    counters = KeyCounters(hot_keys=8, width=64, depth=3)
    rng = random.Random(1)
    truth: dict = {}
    for _ in range(5000):
        key = min(int(rng.paretovariate(1.0)), 500)
        counters.read(key)
        truth[key] = truth.get(key, 0) + 1
    assert len(counters.hot) == 8
    top = sorted(truth, key=truth.get, reverse=True)[:3]
    assert set(top) <= set(counters.hot)
    for key in top:  # exact once hot (admitted at the sketch's upper estimate)
        assert truth[key] <= counters.counts(key)[0] <= truth[key] + counters.reads.error_bound()
    assert min(counters.counts(k)[0] - truth[k] for k in truth) >= 0


def test_counts_age_by_half():
    counters = KeyCounters(hot_keys=2, age_every=10)
    for _ in range(9):
        counters.read("a")
    counters.write("a")  # the 10th event halves the 9 reads, then counts the write
    assert counters.counts("a") == (4, 1)


def test_stats_count_hits_misses_and_capacity_evicts_least_recently_used():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(10), feed=False)
    cache = FreshCache(1.0, "adaptive", capacity=3, clock=clock).attach(table)
    cache.get_many([0, 1, 2])
    cache.get_many([0])          # hit; 1 is now least recently used
    cache.get_many([3])          # evicts 1
    cache.get_many([1])          # cold again
    clock.advance(1.5)
    cache.get_many([0])          # expired: TTL = bound without a feed
    s = cache.stats()
    assert (s["hits"], s["cold_misses"], s["stale_misses"]) == (1, 5, 1)
    assert s["evictions"] == 2 and s["entries"] == 3 and s["backend_reads"] == 4
    assert s["max_staleness_served"] <= 1.0


def test_policy_none_always_reads_the_table_and_ttl_ignores_the_feed():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(4))
    none = FreshCache(1.0, "none", clock=clock).attach(table)
    none.get_many([0, 1, 1])
    none.get_many([0])
    assert none.stats()["backend_keys"] == 3 and none.stats()["hits"] == 0
    ttl = FreshCache(1.0, "ttl", clock=clock).attach(table)
    ttl.get_many([0])
    clock.advance(0.5)
    ttl.get_many([0])
    assert ttl.stats()["feed_polls"] == 0 and ttl.stats()["hits"] == 1


def test_invalid_settings_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="policy='lru'"):
        FreshCache(policy="lru")
    with pytest.raises(ValueError, match="max_staleness must be a positive"):
        FreshCache(max_staleness=0)
    with pytest.raises(RuntimeError, match="call cache.open"):
        FreshCache().get_many([1])


@pytest.mark.parametrize("policy", ["ttl", "adaptive"])
def test_hits_that_keep_expiring_while_misses_are_fetched_are_fetched_not_dropped(policy):
    """Cached keys of different ages, each backend query a second of the bound: on the
    third round the still-expiring hits were moved to the misses and never fetched, so
    keys the table holds were left out (a left lookup's nulls, an inner lookup's lost row)."""
    from streambatch.connectors.lookup.tables import Fetched, TableClient

    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Clock()

    class Slow(TableClient):
        columns = ["v"]

        def fetch(self, keys):
            clock.t += 1.0
            return Fetched({k: {"v": k * 10} for k in keys if k < 10})

    cache = FreshCache(max_staleness=3.5, policy=policy, clock=clock).attach(Slow())
    for key in range(4):  # ages 4, 3, 2 and 1 s when the next call starts
        cache.get_many([key])
    got = cache.get_many([0, 1, 2, 3, 9, 42])
    assert got == {k: {"v": k * 10} for k in (0, 1, 2, 3, 9)}
