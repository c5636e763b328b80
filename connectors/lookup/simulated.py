"""A simulated lookup table for tests and benchmarks: a versioned in-process
table on a simulated clock, with a change feed that can delay, drop and
reorder messages, and a staleness oracle over its full version log.

>>> clock = SimClock()
>>> table = SimulatedTable(clock, keys=range(3))
>>> table.write(1); clock.advance(2.0)
1
>>> table.staleness(1, {"version": 0}, clock()), table.staleness(1, {"version": 1}, clock())
(2.0, 0.0)
"""

from __future__ import annotations

import bisect
import math
import random

from streambatch.connectors.lookup.tables import Change, FeedPoll, Fetched, LookupTable, TableClient


class SimClock:
    """A clock that moves only when told.

    >>> c = SimClock(1.0); c.advance(0.5); c()
    1.5
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


class SimulatedTable(LookupTable, TableClient):
    """Rows ``{"version": n}`` per key; every write is logged with its commit time.

    ``feed``: whether a change feed exists; ``max_delay``: each message is
    delivered after a uniform random delay up to this (so messages also arrive
    out of order); ``drop``: the probability a message is lost;
    ``carries_rows``: whether messages carry the new row. ``fetch_hook(stage,
    keys)`` runs at ``"before"`` and ``"after"`` the read of a fetch (to race
    writes against it).

    >>> t = SimulatedTable(SimClock(), keys=[7])
    >>> t.connect().fetch([7, 8]).rows
    {7: {'version': 0}}
    """

    key = "key"
    seq_is_snapshot = True

    def __init__(self, clock: SimClock, keys=(), *, feed: bool = True, carries_rows: bool = True,
                 max_delay: float = 0.0, drop: float = 0.0, seed: int = 0) -> None:
        self.clock = clock
        self.has_feed, self.feed_carries_rows = feed, carries_rows
        self.max_delay, self.drop = max_delay, drop
        self.rng = random.Random(seed)
        self.log: dict = {k: ([0], [clock()], [True]) for k in keys}  # versions, times, present
        self.seq = 0
        self.inflight: list[tuple[float, int, Change]] = []
        self.fetch_hook = None
        self.fetches = self.fetched_keys = 0

    def connect(self) -> SimulatedTable:
        """The table is its own client."""
        return self

    # ---- writes and the feed ------------------------------------------------------------
    def write(self, key, delete: bool = False) -> int:
        """Commit a new version of ``key`` (or its deletion) now; returns the version."""
        versions, times, present = self.log.setdefault(key, ([], [], []))
        version = versions[-1] + 1 if versions else 0
        versions.append(version)
        times.append(self.clock())
        present.append(not delete)
        self.seq += 1
        if self.has_feed and self.rng.random() >= self.drop:
            row = None if delete or not self.feed_carries_rows else {"version": version}
            at = self.clock() + self.rng.uniform(0.0, self.max_delay)
            self.inflight.append((at, self.seq, Change(self.seq, key, row, delete)))
        return version

    def poll(self, after: int) -> FeedPoll:
        """Messages whose delivery time has come, shuffled; head = the newest commit."""
        now = self.clock()
        ready: list[tuple[float, int, Change]] = []
        waiting: list[tuple[float, int, Change]] = []
        for item in self.inflight:
            (ready if item[0] <= now else waiting).append(item)
        self.inflight = waiting
        self.rng.shuffle(ready)
        return FeedPoll([c for _, _, c in ready], self.seq)

    def head(self) -> int:
        """The newest sequence number."""
        return self.seq

    def fetch(self, keys: list) -> Fetched:
        """Current rows of ``keys`` and the head seq, in one snapshot."""
        if self.fetch_hook:
            self.fetch_hook("before", keys)
        self.fetches += 1
        self.fetched_keys += len(keys)
        rows = {}
        for key in keys:
            if key in self.log and self.log[key][2][-1]:
                rows[key] = {"version": self.log[key][0][-1]}
        out = Fetched(rows, self.seq)
        if self.fetch_hook:
            self.fetch_hook("after", keys)
        return out

    # ---- the oracle --------------------------------------------------------------------
    def staleness(self, key, row, t: float) -> float:
        """How stale serving ``row`` (None = absent) for ``key`` at time ``t`` is:
        0 while it is the table's current state, else the time since the first
        commit that superseded it (the least over states that match)."""
        versions, times, present = self.log.get(key, ([], [], []))
        if row is not None:
            v = row["version"]
            candidates = [v if v < len(versions) and versions[v] == v else versions.index(v)]
        else:
            candidates = [i for i, p in enumerate(present) if not p] or []
        best = math.inf
        upto = bisect.bisect_right(times, t)  # versions committed by time t
        for i in candidates:
            if i >= upto:
                continue  # not committed yet at t (cannot have been read)
            nxt = i + 1
            best = min(best, t - times[nxt] if nxt < upto else 0.0)
        if row is None and not versions:
            return 0.0
        return best
