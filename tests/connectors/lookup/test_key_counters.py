"""KeyCounters finds its least-read hot key with a lazy heap: on random read/write streams
(with aging) it keeps exactly the hot set and counts a plain scan of the hot set keeps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from streambatch.connectors.lookup.sketch import KeyCounters


class ScanningCounters(KeyCounters):
    """The reference: the least-read hot key by a scan of the whole hot set (ties broken
    as the heap breaks them: the entry pushed first)."""

    def _coldest(self):
        order = {key: i for i, (_, _, key) in enumerate(sorted(
            (c, n, k) for c, n, k in self._heap if k in self.hot and self.hot[k][0] == c))}
        key = min(self.hot, key=lambda k: (self.hot[k][0], order.get(k, len(order))))
        super()._coldest()  # keep the heap's top in step with the scan's answer
        return key, self.hot[key][0]


events = st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=400)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(events, st.integers(1, 6), st.integers(3, 50))
def test_the_heap_keeps_what_a_scan_keeps(stream, hot_keys, age_every):
    fast = KeyCounters(hot_keys=hot_keys, width=8, depth=2, age_every=age_every)
    slow = ScanningCounters(hot_keys=hot_keys, width=8, depth=2, age_every=age_every)
    for is_read, key in stream:
        for counters in (fast, slow):
            (counters.read if is_read else counters.write)(key)
        assert fast.hot == slow.hot and fast._floor == slow._floor
        if fast.hot:  # the floor (updated on promotions) never passes the coldest count
            assert fast._floor <= min(c[0] for c in fast.hot.values())
    for key in range(31):
        assert fast.counts(key) == slow.counts(key)


def test_a_promotion_evicts_the_least_read_hot_key():
    c = KeyCounters(hot_keys=2, width=1, depth=1)
    for key in ("a", "a", "a", "b"):
        c.read(key)
    c.read("z")  # the one-cell sketch overestimates z (5 > b's 1): z replaces b, not a
    assert set(c.hot) == {"a", "z"} and c.hot["a"][0] == 3
