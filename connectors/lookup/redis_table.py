"""RedisTable: rows as Redis hashes, with keyspace notifications as the change feed.

Each row is the hash ``<prefix><key>``. The feed subscribes to keyspace
notifications for ``<prefix>*`` (the table turns them on with ``CONFIG SET
notify-keyspace-events`` unless told not to). A poll sends a PING on the
subscriber connection and reads up to its PONG: Redis runs commands one at a
time, so every write committed before the poll is then in hand. Sequence
numbers are assigned in the order messages arrive; a lost subscriber
connection is reported as a feed reset. The ``redis`` package is imported only
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
            self._subscribe()

    def _subscribe(self) -> None:
        self.pubsub = self.r.pubsub()
        self.pubsub.psubscribe(f"{self._channel}{self.spec.prefix}*")
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
            name = f"{self.spec.prefix}{key}"
            if self.spec.columns is None:
                pipe.hgetall(name)
            else:
                pipe.hmget(name, list(self.spec.columns))
        rows = {}
        for key, found in zip(keys, pipe.execute(), strict=True):
            if self.spec.columns is None:
                if found:
                    rows[key] = {f.decode(): self._decode(f.decode(), v) for f, v in found.items()}
            elif any(v is not None for v in found):
                rows[key] = {c: None if v is None else self._decode(c, v)
                             for c, v in zip(self.spec.columns, found, strict=True)}
        return Fetched(rows)

    def head(self) -> int:
        """The number of notifications received so far."""
        return self._seq

    def poll(self, after: int) -> FeedPoll:
        """Notifications up to a PING marker; a broken connection is a reset."""
        try:
            return FeedPoll(self._drain(), self._seq)
        except (self._errors, OSError, TimeoutError):
            try:
                self.pubsub.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._subscribe()
            return FeedPoll([], self._seq, reset=True)

    def _drain(self) -> list[Change]:
        token = uuid.uuid4().hex
        self.pubsub.ping(token)
        changes: list[Change] = []
        skip = len(self._channel) + len(self.spec.prefix)
        while True:
            msg = self.pubsub.get_message(timeout=self.spec.poll_timeout)
            if msg is None:
                raise TimeoutError("no PONG from the Redis subscriber connection")
            if msg["type"] == "pong" and _text(msg["data"]) == token:
                return changes
            if msg["type"] != "pmessage":
                continue
            name = _text(msg["channel"])[skip:]
            try:
                key = self.spec.key_type(name)
            except ValueError:
                continue  # a key under the prefix that is not a row of this table
            self._seq += 1
            event = _text(msg["data"])
            changes.append(Change(self._seq, key, None, event in ("del", "expired", "evicted")))

    def close(self) -> None:
        """Close both connections."""
        if self.has_feed:
            self.pubsub.close()
        self.r.close()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
