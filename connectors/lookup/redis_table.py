"""RedisTable: rows as Redis hashes, with keyspace notifications as the change feed.

Each row is the hash ``<prefix><key>``. The feed subscribes to keyspace
notifications for ``<prefix>*`` (the table turns them on with ``CONFIG SET
notify-keyspace-events`` unless told not to). A poll sends a PING on the
subscriber connection and reads up to its PONG: Redis runs commands one at a
time, so every write committed before the poll is then in hand. Sequence
numbers are assigned in the order messages arrive; a lost subscriber
connection is reported as a feed reset, and so is a poll that does not hear the
client's own beacon hash (``<prefix>__streambatch_feed_<id>__``, rewritten at every
poll and removed at close): notifications are off, or the database was flushed or
swapped, which Redis announces to no key. The ``redis`` package is imported only
when a client connects.

>>> RedisTable("redis://127.0.0.1:6379/0", prefix="user:", key="id", key_type=int).describe()
"RedisTable('redis://127.0.0.1:6379/0', prefix='user:', key=id)"
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from streambatch.connectors.lookup.tables import Change, FeedPoll, Fetched, LookupTable, TableClient

from streambatch._dependencies import import_optional

_NOTIFY_FLAGS = "Kgh$xe"  # keyspace events of generic, hash and string commands, expiry, eviction


@dataclass
class RedisTable(LookupTable):
    """Rows as hashes ``<prefix><key>`` on a Redis server.

    ``key_type`` converts keys read from notifications (looked-up keys must be
    of that type); ``schema`` maps field -> Python type (int, float, str,
    bytes) for the values (default str); ``columns`` picks the fields (default
    all fields of each hash).

    >>> RedisTable(prefix="p:", key="sku").key_type
    <class 'str'>
    """

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = ""
    key: str = "key"
    columns: tuple[str, ...] | None = None
    key_type: type = str
    schema: dict | None = None
    feed: bool = True
    configure_notifications: bool = True
    poll_timeout: float = 5.0

    def connect(self) -> RedisClient:
        """Connect (in the worker) and subscribe to the feed."""
        return RedisClient(self)

    def describe(self) -> str:
        """Short name for plans and messages."""
        return f"RedisTable({self.url!r}, prefix={self.prefix!r}, key={self.key})"


class RedisClient(TableClient):
    """A Redis connection for fetches plus a subscriber connection for the feed."""

    def __init__(self, spec: RedisTable) -> None:
        redis = import_optional("redis", extra="redis", what="RedisTable")
        self.spec, self._errors = spec, redis.exceptions.RedisError
        self.r = redis.Redis.from_url(spec.url)
        self.has_feed = spec.feed
        self._seq = 0
        self._types = dict(spec.schema or {})
        self.columns = list(spec.columns) if spec.columns is not None else None
        if spec.columns is not None:
            import pyarrow as pa
            arrow = {int: pa.int64(), float: pa.float64(), str: pa.string(), bytes: pa.binary()}
            self.schema = pa.schema([(c, arrow.get(self._types.get(c, str), pa.string()))
                                     for c in spec.columns])
        if spec.feed:
            if spec.configure_notifications:
                current = self.r.config_get("notify-keyspace-events").get(
                    "notify-keyspace-events", "")
                wanted = "".join(sorted(set(current) | set(_NOTIFY_FLAGS)))
                if set(wanted) != set(current):
                    self.r.config_set("notify-keyspace-events", wanted)
            db = self.r.connection_pool.connection_kwargs.get("db", 0)
            self._channel = f"__keyspace@{db}__:"
            self._beacon = f"{spec.prefix}__streambatch_feed_{uuid.uuid4().hex}__"
            self._last_beat: str | None = None
            self._subscribe()

    def _subscribe(self) -> None:
        self.pubsub = self.r.pubsub()
        self.pubsub.psubscribe(f"{self._channel}{_glob_escaped(self.spec.prefix)}*")
        while True:  # wait for the subscription to be in place
            msg = self.pubsub.get_message(timeout=self.spec.poll_timeout)
            if msg is None:
                raise TimeoutError(f"{self.spec.describe()}: no reply to PSUBSCRIBE")
            if msg["type"] == "psubscribe":
                return

    def _decode(self, field: str, raw: bytes):
        kind = self._types.get(field, str)
        return raw if kind is bytes else kind(raw.decode())

    def fetch(self, keys: list) -> Fetched:
        """All keys' hashes in one MULTI/EXEC round trip."""
        bad = next((k for k in keys if not isinstance(k, self.spec.key_type)), None)
        if bad is not None:
            raise TypeError(f"{self.spec.describe()}: looked-up key {bad!r} is a "
                            f"{type(bad).__name__}, not a {self.spec.key_type.__name__}; "
                            f"pass RedisTable(key_type={type(bad).__name__})")
        pipe = self.r.pipeline(transaction=True)
        for key in keys:
            name = self.spec.prefix.encode() + key if isinstance(key, bytes) \
                else f"{self.spec.prefix}{key}"
            if self.spec.columns is None:
                pipe.hgetall(name)
            else:
                pipe.hmget(name, list(self.spec.columns))
            pipe.pttl(name)  # a hash with a TTL: served no longer than it lives (Redis may
        rows, expires = {}, {}  # announce its expiry minutes late)
        replies = pipe.execute()
        for key, found, ttl in zip(keys, replies[::2], replies[1::2], strict=True):
            if self.spec.columns is None:
                if found:
                    rows[key] = {f.decode(): self._decode(f.decode(), v) for f, v in found.items()}
            elif any(v is not None for v in found):
                rows[key] = {c: None if v is None else self._decode(c, v)
                             for c, v in zip(self.spec.columns, found, strict=True)}
            if key in rows and ttl is not None and ttl >= 0:
                expires[key] = ttl / 1000
        return Fetched(rows, expires=expires)

    def head(self) -> int:
        """The number of notifications received so far."""
        return self._seq

    def poll(self, after: int) -> FeedPoll:
        """Notifications up to a PING marker; a broken connection is a reset, and so is
        a poll whose beacon (:meth:`_beat`) shows notifications lost: off, or a
        FLUSHDB, FLUSHALL or SWAPDB, which Redis announces to no key."""
        try:
            lost = self._beat()
        except self._errors:  # (a read-only replica: the feed cannot be checked, so it
            lost = True  # is not trusted; the cache falls back to each entry's lease)
        try:
            changes, heard = self._drain()
            return FeedPoll(changes, self._seq, reset=lost or not heard)
        except (self._errors, OSError, TimeoutError):
            try:
                self.pubsub.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._subscribe()
            return FeedPoll([], self._seq, reset=True)

    def _beat(self) -> bool:
        """Set this client's beacon key (under the prefix, so its notification comes on
        the feed; it expires an hour after the last poll) to a new token; True when
        the token it held is not the last one set (the database was flushed or
        swapped: no key's notification says so)."""
        token = uuid.uuid4().hex
        pipe = self.r.pipeline(transaction=False)  # a hash: its notification needs only the
        pipe.hget(self._beacon, "t")  # hash events the feed needs anyway
        pipe.hset(self._beacon, "t", token)
        pipe.pexpire(self._beacon, 3_600_000)
        old = pipe.execute()[0]
        lost = self._last_beat is not None and (old is None or _text(old) != self._last_beat)
        self._last_beat = token
        return lost

    def _drain(self) -> tuple[list[Change], bool]:
        """The changes notified before a PING marker, and whether the beacon's was among
        them (Redis publishes a write's notification before it answers it, so the SET
        of :meth:`_beat` is notified before the PONG when notifications are on)."""
        token = uuid.uuid4().hex
        self.pubsub.ping(token)
        changes: list[Change] = []
        heard = False
        skip = len(self._channel.encode()) + len(self.spec.prefix.encode())
        beacon = self._beacon.encode()
        while True:
            msg = self.pubsub.get_message(timeout=self.spec.poll_timeout)
            if msg is None:
                raise TimeoutError("no PONG from the Redis subscriber connection")
            if msg["type"] == "pong" and _text(msg["data"]) == token:
                return changes, heard
            if msg["type"] != "pmessage":
                continue
            channel = msg["channel"] if isinstance(msg["channel"], bytes) \
                else str(msg["channel"]).encode()
            if channel.endswith(beacon):
                heard = True
                continue
            key = self._key_of(channel[skip:])
            if key is None:
                continue  # a key under the prefix that is not a row of this table
            self._seq += 1
            event = _text(msg["data"])
            changes.append(Change(self._seq, key, None, event in ("del", "expired", "evicted")))

    def _key_of(self, name: bytes):
        """The row key of a hash name (after the prefix), or None."""
        if self.spec.key_type is bytes:
            return name
        try:
            return self.spec.key_type(name.decode())
        except (ValueError, UnicodeDecodeError):
            return None

    def close(self) -> None:
        """Close both connections (and remove the beacon)."""
        if self.has_feed:
            self.pubsub.close()
            try:
                self.r.delete(self._beacon)
            except self._errors:
                pass
        self.r.close()


def _glob_escaped(text: str) -> str:
    """``text`` matched literally by a PSUBSCRIBE pattern.

    >>> print(_glob_escaped("t[1]:*"))
    t\\[1\\]:\\*
    """
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
