"""The staleness oracle: every value the cache serves is checked against the
table's full version log (simulated clock). Property-based over workloads and
feeds that delay, drop and reorder messages, plus proof that the oracle does
flag a fixed TTL of 10x the bound and a feed trusted without the lease."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streambatch.connectors.lookup import FreshCache
from streambatch.connectors.lookup.simulated import SimClock, SimulatedTable

BOUND = 1.0
KEYS = 12


def run(cache: FreshCache, table: SimulatedTable, ops, bound: float = BOUND) -> dict:
    """Replay ``ops``; return the worst staleness served and the violation count."""
    cache.attach(table)
    worst, violations, served = 0.0, 0, 0
    for op in ops:
        kind = op[0]
        if kind == "write":
            table.write(op[1], delete=op[2])
        elif kind == "tick":
            table.clock.advance(op[1])
        elif kind == "race":  # a write lands inside the next fetch, before or after its read
            key, stage = op[1], op[2]

            def hook(at, keys, key=key, stage=stage):
                if at == stage and key in keys and table.fetch_hook is not None:
                    table.fetch_hook = None
                    table.clock.advance(0.01)
                    table.write(key)
            table.fetch_hook = hook
        else:
            found = cache.get_many(op[1])
            now = table.clock()
            for key in op[1]:
                stale = table.staleness(key, found.get(key), now)
                worst = max(worst, stale)
                violations += stale > bound + 1e-9
                served += 1
    return {"worst": worst, "violations": violations, "served": served}


key = st.integers(0, KEYS - 1)
op = st.one_of(
    st.tuples(st.just("write"), key, st.sampled_from([False, False, False, True])),
    st.tuples(st.just("write"), key, st.just(False)),
    st.tuples(st.just("tick"), st.floats(0.0, 2.5 * BOUND)),
    st.tuples(st.just("tick"), st.floats(0.0, 0.2 * BOUND)),
    st.tuples(st.just("read"), st.lists(key, min_size=1, max_size=6)),
    st.tuples(st.just("read"), st.lists(key, min_size=1, max_size=6)),
    st.tuples(st.just("race"), key, st.sampled_from(["before", "after"])),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=5, max_size=120),
       max_delay=st.sampled_from([0.0, 0.1, 0.6, 3.0]),
       drop=st.sampled_from([0.0, 0.1, 0.5]),
       carries_rows=st.booleans(),
       feed=st.booleans(),
       costs=st.sampled_from([None, {"miss": 1.0, "update": 1.0, "invalidate": 0.1},
                              {"miss": 1.0, "update": 1e-3, "invalidate": 1e-3}]),
       poll_interval=st.sampled_from([0.0, 0.1, 0.5]),
       policy=st.sampled_from(["adaptive", "adaptive", "ttl", "none"]),
       seed=st.integers(0, 1000))
def test_served_values_stay_within_the_bound(ops, max_delay, drop, carries_rows, feed, costs,
                                             poll_interval, policy, seed):
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(KEYS), feed=feed, carries_rows=carries_rows,
                           max_delay=max_delay, drop=drop, seed=seed)
    cache = FreshCache(BOUND, policy, capacity=8, costs=costs, poll_interval=poll_interval,
                       clock=clock)
    result = run(cache, table, ops)
    assert result["violations"] == 0, result
    assert result["worst"] <= BOUND


def _workload(seed: int, n: int = 3000, keys: int = 20):
    """Reads and writes over a few keys, time moving 10 ms per step."""
    rng = random.Random(seed)
    ops = []
    for _ in range(n):
        if rng.random() < 0.3:
            ops.append(("write", rng.randrange(keys), False))
        else:
            ops.append(("read", [rng.randrange(keys) for _ in range(4)]))
        ops.append(("tick", 0.01))
    return ops


def test_the_adaptive_cache_passes_a_long_lossy_workload_with_hits():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(20), max_delay=0.2, drop=0.05, seed=1)
    cache = FreshCache(BOUND, "adaptive", clock=clock, poll_interval=0.05)
    result = run(cache, table, _workload(1))
    stats = cache.stats()
    assert result["violations"] == 0 and result["worst"] <= BOUND
    assert stats["hit_ratio"] > 0.5 and stats["feed_gaps"] > 0  # drops were detected
    assert stats["updates"] > 0


def test_the_oracle_flags_a_fixed_ttl_of_ten_times_the_bound():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(20), feed=False)
    cache = FreshCache(10 * BOUND, "ttl", clock=clock)  # TTL = 10x the bound the oracle checks
    result = run(cache, table, _workload(2))
    assert result["violations"] > 0 and result["worst"] > BOUND


def test_the_oracle_flags_a_feed_trusted_without_the_lease_fallback():
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(20), max_delay=0.05, drop=0.2, seed=3)
    cache = FreshCache(BOUND, "adaptive", clock=clock, poll_interval=0.05)
    cache._blind_feed = True  # trust every poll, even with lost messages
    result = run(cache, table, _workload(3))
    assert result["violations"] > 0 and result["worst"] > BOUND
    # ...and the same workload and feed with the lease fallback is clean
    clock = SimClock()
    table = SimulatedTable(clock, keys=range(20), max_delay=0.05, drop=0.2, seed=3)
    safe = run(FreshCache(BOUND, "adaptive", clock=clock, poll_interval=0.05), table, _workload(3))
    assert safe["violations"] == 0


def test_a_write_racing_a_fetch_is_applied_not_lost():
    clock = SimClock()
    table = SimulatedTable(clock, keys=[1], carries_rows=True)
    cache = FreshCache(BOUND, "adaptive", clock=clock, poll_interval=0.0,
                       costs={"miss": 1.0, "update": 1e-3, "invalidate": 1e-3})
    cache.attach(table)
    table.fetch_hook = lambda at, keys: at == "after" and table.write(1)  # lands after the read
    assert cache.get_many([1]) == {1: {"version": 0}}
    table.fetch_hook = None
    clock.advance(0.1)
    assert cache.get_many([1]) == {1: {"version": 1}}  # the racing change was applied
    clock.advance(0.1)
    assert cache.get_many([1]) == {1: {"version": 1}}
    assert cache.stats()["backend_reads"] == 1  # ...as an update carried by the feed


def test_a_change_older_than_the_fetch_is_not_rolled_back():
    clock = SimClock()
    table = SimulatedTable(clock, keys=[1])
    cache = FreshCache(BOUND, "adaptive", clock=clock, poll_interval=10.0,
                       costs={"miss": 1.0, "update": 1e-3, "invalidate": 1e-3})
    cache.attach(table)
    table.write(1)
    table.write(1)                                      # versions 1 and 2, messages held back
    table.inflight = [(1e9, seq, change) for _, seq, change in table.inflight]
    clock.advance(0.9)
    assert cache.get_many([1]) == {1: {"version": 2}}  # fetched after both writes
    table.inflight[0] = (0.0, *table.inflight[0][1:])   # the version-1 message arrives alone
    clock.advance(0.6)
    cache.poll()
    served = cache.get_many([1])
    assert served == {1: {"version": 2}}                # not rolled back to version 1
    assert table.staleness(1, served[1], clock()) == 0.0
