"""FreshCache: a lookup cache that never serves a value older than a staleness bound.

The policy is the adaptive one of "Revisiting Cache Freshness for Emerging
Real-Time Applications" (HotNets '24): for each change of a cached key that the
table's change feed reports, the cache **invalidates iff E[W] * c_update >
c_miss + c_invalidate, else updates** the entry, where E[W] is the expected
number of writes between two reads of that key (counted per key; no reads yet
means invalidate) and the costs are moving averages of the real operations (an
update costs a refetch unless the feed carries the new row).

Freshness (``max_staleness`` = the bound, in seconds of ``clock``):

- every entry records when its value was known to be current (``as_of``: the
  start of its fetch) and the feed sequence number its value reflects;
- the feed is trusted only up to the start of the last poll after which every
  change up to the feed's head had been applied (no holes); an entry covered by
  the current feed epoch is then current as of that poll;
- a hole that stays open longer than ``gap_timeout``, or a feed reconnect,
  starts a new epoch: entries from before it keep only what they had (a lease
  of ``max_staleness`` past their last guarantee);
- where a writer can still commit a change numbered below the cursor (a hole
  given up on, or a writer running when the cache attached: the table reports a
  :class:`Horizon`), no poll will deliver it: the epoch's entries keep only
  their lease until every such writer has ended, then a new, trusted epoch starts;
- with no feed (or ``policy="ttl"``) the lease is all there is: TTL = the bound;
- a change is applied to an entry only when its sequence number is newer than
  the entry's, so a write racing a fetch is never lost nor rolled back.

>>> from streambatch.connectors.lookup.tables import DictTable
>>> cache = FreshCache(max_staleness=5.0).open(DictTable({1: {"v": "a"}}, key="id"))
>>> cache.get_many([1, 2, 1])
{1: {'v': 'a'}}
>>> s = cache.stats(); s["cold_misses"], s["hits"], s["backend_reads"]
(2, 0, 1)
>>> cache.get_many([1]) and cache.stats()["hits"]
1
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

from streambatch.connectors.lookup.sketch import KeyCounters
from streambatch.connectors.lookup.tables import FeedPoll, Horizon, LookupTable, TableClient

POLICIES = ("adaptive", "ttl", "none")
_NEVER = -math.inf


def should_invalidate(expected_writes: float | None, c_update: float, c_miss: float,
                      c_invalidate: float) -> bool:
    """The paper's rule: invalidate iff ``E[W] * c_update > c_miss + c_invalidate``.

    ``expected_writes`` is None when the key was never read: invalidate.

    >>> should_invalidate(3.0, c_update=1.0, c_miss=1.0, c_invalidate=0.1)
    True
    >>> should_invalidate(0.2, c_update=1.0, c_miss=1.0, c_invalidate=0.1)
    False
    >>> should_invalidate(None, 0.0, 1.0, 0.0)
    True
    """
    if expected_writes is None:
        return True
    return expected_writes * c_update > c_miss + c_invalidate


class _Entry:
    __slots__ = ("row", "valid", "seq", "as_of", "epoch", "expires_at")

    def __init__(self, row, seq: int, as_of: float, epoch: int,
                 expires_at: float = math.inf) -> None:
        self.row, self.valid, self.seq, self.as_of, self.epoch = row, True, seq, as_of, epoch
        self.expires_at = expires_at  # the store drops the row then (a Redis TTL)


class _Ema:
    """A moving average of measured costs (seconds)."""

    def __init__(self, initial: float, alpha: float) -> None:
        self.value, self.alpha, self.samples = initial, alpha, 0

    def add(self, sample: float) -> None:
        self.value = sample if not self.samples else self.value + self.alpha * (sample - self.value)
        self.samples += 1


_COUNTERS = ("hits", "cold_misses", "stale_misses", "backend_reads", "backend_keys", "backend_rows",
             "updates", "invalidations", "feed_polls", "feed_changes", "feed_gaps", "evictions")


class FreshCache:
    """A per-worker lookup cache bounded by ``max_staleness`` seconds.

    ``policy``: "adaptive" (change feed + the invalidate/update rule, TTL = bound
    as a lease), "ttl" (TTL = bound, the feed unused) or "none" (every lookup
    goes to the table, still one batched query per call). ``capacity`` bounds
    the entries (LRU). ``costs`` fixes {"miss", "update", "invalidate"} instead
    of measuring them; ``clock`` is the time source (seconds).

    The object handed to ``Dataset.lookup`` is a template: each worker uses its
    own :meth:`copy`, whose counts :meth:`stats` adds up when the copies live in
    this process (thread workers).

    >>> FreshCache(max_staleness=0.5, policy="ttl").policy
    'ttl'
    """

    def __init__(self, max_staleness: float = 1.0, policy: str = "adaptive",
                 capacity: int = 100_000, *, poll_interval: float | None = None,
                 gap_timeout: float | None = None, hot_keys: int = 1024,
                 sketch_width: int = 2048, sketch_depth: int = 4, costs: dict | None = None,
                 clock=time.monotonic, cost_alpha: float = 0.2) -> None:
        if not (isinstance(max_staleness, (int, float)) and max_staleness > 0):
            raise ValueError(f"FreshCache: max_staleness must be a positive number of seconds, "
                             f"got {max_staleness!r}")
        if policy not in POLICIES:
            raise ValueError(f"FreshCache: policy={policy!r}; expected one of {', '.join(POLICIES)}")
        if not (isinstance(capacity, int) and capacity > 0):
            raise ValueError(f"FreshCache: capacity must be a positive int, got {capacity!r}")
        unknown = set(costs or {}) - {"miss", "update", "invalidate"}
        if unknown:
            raise ValueError(f"FreshCache: unknown cost names {sorted(unknown)}; "
                             "use 'miss', 'update', 'invalidate'")
        self.max_staleness, self.policy, self.capacity = float(max_staleness), policy, capacity
        self.poll_interval = max_staleness / 4 if poll_interval is None else poll_interval
        self.gap_timeout = max_staleness / 2 if gap_timeout is None else gap_timeout
        self._config = dict(hot_keys=hot_keys, sketch_width=sketch_width,
                            sketch_depth=sketch_depth, costs=costs, clock=clock,
                            cost_alpha=cost_alpha)
        self.clock = clock
        self.fixed_costs = dict(costs or {})
        self._alpha = cost_alpha
        self._lock = threading.RLock()
        self._children: list[FreshCache] = []
        self._client: TableClient | None = None
        self._blind_feed = False  # test hook: trust every poll (no lease fallback); unsafe
        self._entries: OrderedDict = OrderedDict()
        self._counters = KeyCounters(hot_keys, sketch_width, sketch_depth)
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._max_served = 0.0
        self._epoch, self._epoch_trust = 0, {0: _NEVER}
        self._cursor = 0
        self._pending: set[int] = set()  # feed seqs applied above the cursor (holes below)
        self._open_polls: deque[tuple[float, int]] = deque()  # (start, head) not yet applied
        self._last_poll = _NEVER
        self._unsettled: int | None = None  # writers below this may commit skipped changes
        self._miss = _Ema(1e-3, cost_alpha)
        self._refetch = _Ema(1e-3, cost_alpha)
        self._apply = _Ema(1e-6, cost_alpha)
        self._invalidate = _Ema(1e-6, cost_alpha)

    # ---- set-up --------------------------------------------------------------------
    def copy(self) -> FreshCache:
        """A fresh cache with the same settings, counted in this one's :meth:`stats`.

        >>> FreshCache(2.0).copy().max_staleness
        2.0
        """
        twin = FreshCache(self.max_staleness, self.policy, self.capacity,
                          poll_interval=self.poll_interval, gap_timeout=self.gap_timeout,
                          **self._config)
        twin._blind_feed = self._blind_feed
        with self._lock:
            self._children.append(twin)
        return twin

    def open(self, table: LookupTable) -> FreshCache:
        """Connect to ``table`` (in the calling worker) and use it; returns self."""
        return self.attach(table.connect())

    def attach(self, client: TableClient) -> FreshCache:
        """Use an already connected client (the feed is followed from its current head)."""
        with self._lock:
            self._client = client
            if self.uses_feed:
                self._cursor, self._pending = client.head(), set()
                self._hold(client.horizon())
        return self

    def close(self) -> None:
        """Close the table client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> TableClient | None:
        """The connected table client (None before :meth:`open`)."""
        return self._client

    @property
    def _connected(self) -> TableClient:
        """The table client, for the methods that run only once it is attached."""
        if self._client is None:
            raise RuntimeError("FreshCache: no table; call cache.open(table) first")
        return self._client

    @property
    def uses_feed(self) -> bool:
        """True when the adaptive policy has a change feed to follow."""
        return self.policy == "adaptive" and bool(self._client and self._client.has_feed)

    # ---- lookups -------------------------------------------------------------------
    def get_many(self, keys) -> dict:
        """Rows for ``keys`` (absent keys left out), each within ``max_staleness``;
        all misses are fetched in one batched backend query."""
        if self._client is None:
            raise RuntimeError("FreshCache.get_many: no table; call cache.open(table) first")
        keys = list(dict.fromkeys(keys))
        with self._lock:
            now = self.clock()
            if self.uses_feed and now - self._last_poll >= self.poll_interval:
                self._poll()
                now = self.clock()
            if self.policy == "none":
                self._stats["cold_misses"] += len(keys)
                rows = self._fetch(keys, store=False) if keys else {}
                return rows
            hits, missing = [], []
            for key in keys:
                self._counters.read(key)
                entry = self._entries.get(key)
                if entry is None:
                    self._stats["cold_misses"] += 1
                    missing.append(key)
                elif not entry.valid or now - self._as_of(entry) > self.max_staleness \
                        or now >= entry.expires_at:
                    self._stats["stale_misses"] += 1
                    missing.append(key)
                else:
                    hits.append((key, entry))
            out: dict = {}
            for attempt in range(4):  # a hit may expire while misses are fetched: fetch it
                if missing:  # too; a third time, every hit left (then none can expire)
                    out.update(self._fetch(missing))
                now = self.clock()
                expired = [k for k, e in hits if now - self._as_of(e) > self.max_staleness
                           or now >= e.expires_at]
                if not expired:
                    break
                self._stats["stale_misses"] += len(expired)
                if attempt == 2:
                    expired = [k for k, _ in hits]
                gone = set(expired)
                hits = [(k, e) for k, e in hits if k not in gone]
                missing = expired
            for key, entry in hits:  # (an entry may have been evicted by this call's fetch)
                if key in self._entries:
                    self._entries.move_to_end(key)
                self._max_served = max(self._max_served, now - self._as_of(entry))
                if entry.row is not None:
                    out[key] = entry.row
            self._stats["hits"] += len(hits)
            return {k: out[k] for k in keys if k in out}

    def _as_of(self, entry: _Entry) -> float:
        """When ``entry``'s value was last known current."""
        if not entry.valid:
            return _NEVER
        if self.policy != "adaptive":
            return entry.as_of
        return max(entry.as_of, self._epoch_trust.get(entry.epoch, _NEVER))

    def _fetch(self, keys: list, store: bool = True) -> dict:
        start, cursor, epoch = self.clock(), self._cursor, self._epoch
        t0 = time.perf_counter()
        fetched = self._connected.fetch(keys)
        self._miss.add((time.perf_counter() - t0) / len(keys))
        self._stats["backend_reads"] += 1
        self._stats["backend_keys"] += len(keys)
        self._stats["backend_rows"] += len(fetched.rows)
        self._max_served = max(self._max_served, self.clock() - start)
        if not store:
            return fetched.rows
        seq = fetched.seq if (self._connected.seq_is_snapshot and fetched.seq is not None) else cursor
        for key in keys:
            left = fetched.expires.get(key)
            self._entries[key] = _Entry(fetched.rows.get(key), seq, start, epoch,
                                        math.inf if left is None else start + left)
            self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self._stats["evictions"] += 1
        return fetched.rows

    # ---- the change feed -------------------------------------------------------------
    def poll(self) -> None:
        """Poll the change feed now (normally done by :meth:`get_many` every ``poll_interval``)."""
        with self._lock:
            if self.uses_feed:
                self._poll()

    def _poll(self) -> None:
        start = self.clock()
        poll: FeedPoll = self._connected.poll(self._cursor)
        self._last_poll = start
        self._stats["feed_polls"] += 1
        refetch = []
        for change in sorted(poll.changes, key=lambda c: c.seq):
            if change.seq <= self._cursor or change.seq in self._pending:
                continue  # already applied (a duplicate delivery)
            self._stats["feed_changes"] += 1
            self._note_seq(change.seq)
            self._counters.write(change.key)
            if self._apply_change(change):
                refetch.append(change.key)
        if poll.reset:
            self._stats["feed_gaps"] += 1
            self._new_epoch(start, poll.head)
        else:
            self._advance_trust(start, poll.head, poll.horizon)
        self._settle(start, poll.horizon)
        if refetch:
            t0 = time.perf_counter()
            self._fetch(list(dict.fromkeys(refetch)))
            self._refetch.add((time.perf_counter() - t0) / len(refetch))

    def _note_seq(self, seq: int) -> None:
        if seq > self._cursor:
            self._pending.add(seq)
        while self._cursor + 1 in self._pending:
            self._pending.remove(self._cursor + 1)
            self._cursor += 1

    def _apply_change(self, change) -> bool:
        """Invalidate or update the entry of ``change.key``; True when it needs a refetch."""
        entry = self._entries.get(change.key)
        if entry is None or not entry.valid or change.seq <= entry.seq:
            return False
        carries = self._connected.feed_carries_rows and (change.row is not None or change.deleted)
        c_update = self.costs()["update"] if carries else self.costs()["refetch"]
        costs = self.costs()
        expected = self._counters.expected_writes_between_reads(change.key)
        t0 = time.perf_counter()
        if should_invalidate(expected, c_update, costs["miss"], costs["invalidate"]):
            entry.valid = False
            self._invalidate.add(time.perf_counter() - t0)
            self._stats["invalidations"] += 1
            return False
        self._stats["updates"] += 1
        if not carries:
            entry.valid = False  # until the batched refetch at the end of this poll
            return True
        entry.row = None if change.deleted else change.row
        entry.seq = change.seq
        self._apply.add(time.perf_counter() - t0)
        return False

    def _advance_trust(self, start: float, head: int, horizon: Horizon | None = None) -> None:
        """Trust moves to the start of the newest poll whose head is fully applied
        (not while a writer may still commit a skipped change: see :meth:`_hold`)."""
        if self._blind_feed:
            self._cursor = max(self._cursor, head)
            self._epoch_trust[self._epoch] = start
            return
        self._open_polls.append((start, head))
        while self._open_polls and self._cursor >= self._open_polls[0][1]:
            trusted = self._open_polls.popleft()[0]
            if self._unsettled is None:
                self._epoch_trust[self._epoch] = max(self._epoch_trust[self._epoch], trusted)
        if self._open_polls and start - self._open_polls[0][0] > self.gap_timeout:
            self._stats["feed_gaps"] += 1  # a hole stayed open too long: messages were lost
            self._new_epoch(start, head)
            self._hold(horizon)  # ...or its writer is still running and commits later

    def _hold(self, horizon: Horizon | None) -> None:
        """The cursor now covers sequence numbers that writers running at ``horizon`` may
        still commit, where no poll looks: until they have all ended, the current
        epoch's entries keep only their lease."""
        if horizon is not None and not horizon.settled(horizon.begun):
            self._unsettled = max(self._unsettled or 0, horizon.begun)

    def _settle(self, start: float, horizon: Horizon | None) -> None:
        """Once every writer the cache waits for has ended (``horizon``, taken after
        ``start``), entries fetched from now on see their changes: a trusted epoch."""
        if self._unsettled is None or horizon is None or not horizon.settled(self._unsettled):
            return
        self._unsettled = None
        self._epoch += 1
        self._epoch_trust[self._epoch] = start

    def _new_epoch(self, start: float, head: int) -> None:
        """Changes up to ``head`` may be lost: entries fetched before now keep only their lease."""
        self._epoch += 1
        self._cursor = max(self._cursor, head)
        self._pending = {s for s in self._pending if s > self._cursor}
        self._note_seq(self._cursor)
        self._epoch_trust[self._epoch] = start
        self._open_polls.clear()

    # ---- reporting -------------------------------------------------------------------
    def costs(self) -> dict:
        """Current cost estimates in seconds: miss, update (row carried), refetch, invalidate.

        >>> FreshCache(costs={"miss": 2.0}).costs()["miss"]
        2.0
        """
        out = {"miss": self._miss.value, "update": self._apply.value,
               "refetch": self._refetch.value if self._refetch.samples else self._miss.value,
               "invalidate": self._invalidate.value}
        out.update(self.fixed_costs)
        if "update" in self.fixed_costs:
            out["refetch"] = self.fixed_costs["update"]
        return out

    def stats(self) -> dict:
        """Counts of this cache and its copies: hits, cold/stale misses, backend reads
        (queries), keys and rows, updates, invalidations, feed polls/changes/gaps,
        evictions, hit ratio and the largest staleness bound of a served value
        (``max_staleness_served``: now minus when the value was last known current).
        Copies made in this process are counted (the local backend runs lookups on
        threads of the driver); copies in other processes (Ray workers) are not.

        >>> FreshCache().stats()["hits"]
        0
        """
        with self._lock:
            total: dict[str, float] = dict(self._stats)
            served = self._max_served
            entries = len(self._entries)
            for child in self._children:
                sub = child.stats()
                for name in _COUNTERS:
                    total[name] += sub[name]
                served = max(served, sub["max_staleness_served"])
                entries += sub["entries"]
        lookups = total["hits"] + total["cold_misses"] + total["stale_misses"]
        total["hit_ratio"] = total["hits"] / lookups if lookups else 0.0
        total["max_staleness_served"] = served
        total["entries"] = entries
        return total
