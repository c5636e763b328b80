"""The lookup-table contract: a picklable table description and a per-worker client.

A :class:`LookupTable` describes where the rows live (a file, a server URL) and
opens nothing until :meth:`LookupTable.connect` is called inside the worker
that uses it, so no connection crosses a ``fork``. The :class:`TableClient` it
returns fetches rows by key (one batched query per call) and, where the store
can give one, polls a change feed.

>>> client = DictTable({1: {"v": "a"}}, key="id").connect()
>>> client.fetch([1, 2]).rows
{1: {'v': 'a'}}
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Change:
    """One change of one key in a feed: ``row`` is the new row, or None when the
    feed does not carry rows; ``deleted`` marks a removed row.

    >>> Change(3, "k", {"v": 1}).seq
    3
    """

    seq: int
    key: object
    row: dict | None = None
    deleted: bool = False


@dataclass(frozen=True)
class Horizon:
    """Where the writers of a store stand, for a feed whose sequence numbers are taken
    before commit (so one can commit long after a later one): every writer numbered
    below ``ended`` has committed or rolled back, and every writer that has taken a
    sequence number so far is numbered below ``begun`` (PostgreSQL: the xmin and xmax
    of a snapshot). ``ended >= begun``: no writer is running.

    >>> Horizon(ended=7, begun=9).settled(7), Horizon(ended=7, begun=9).settled(9)
    (True, False)
    """

    ended: int
    begun: int

    def settled(self, token: int) -> bool:
        """True when every writer numbered below ``token`` has ended."""
        return self.ended >= token


@dataclass
class FeedPoll:
    """What one poll of a change feed returned.

    ``head`` is the newest sequence number committed before the poll started
    (every change up to it has been, or will be, delivered unless the feed lost
    it); ``reset`` says the feed reconnected and may have lost changes;
    ``horizon`` is the store's :class:`Horizon` taken at or after the poll's
    snapshot, when its sequence numbers can commit out of order (else None).

    >>> FeedPoll([], head=0).changes
    []
    """

    changes: list[Change]
    head: int
    reset: bool = False
    horizon: Horizon | None = None


@dataclass
class Fetched:
    """Rows read by key (missing keys are absent), with the feed's head sequence
    number in the same snapshot when the store can give one (else None), and, for a
    store whose rows expire by themselves (Redis TTLs), the seconds left to each such
    row from the fetch's start: the cache serves it no longer, whatever the feed says.

    >>> Fetched({}, None).seq is None, Fetched({}).expires
    (True, {})
    """

    rows: dict
    seq: int | None = None
    expires: dict = field(default_factory=dict)


def check_paired(where: str, key: str, keys: list, rows: dict, store: str) -> None:
    """Refuse rows a store matched to ``keys`` only by converting them.

    A store that casts or collates the looked-up keys (SQLite's TEXT ``'1'`` for
    the dataset's ``1``, PostgreSQL's bigint ``1`` for ``'1'``) returns rows under
    its own key values; the lookup pairs rows by the dataset's values, so every
    such row would come out unmatched (nulls, or dropped by an inner lookup).
    ``where`` names the table, ``key`` its key column, ``store`` the database.

    >>> check_paired("T", "id", [1, 2], {1: {}}, "SQLite")
    >>> check_paired("T", "id", ["1"], {1: {}}, "PostgreSQL")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: T: the table's key 'id' holds 1 (int), which PostgreSQL matched to the dataset's str key values ...
    """
    asked_for = set(keys)
    strays = [k for k in rows if k not in asked_for]
    if not strays:
        return
    stray = strays[0]
    asked = next((k for k in keys if k is not None), None)
    raise TypeError(
        f"{where}: the table's key {key!r} holds {stray!r} ({type(stray).__name__}), which "
        f"{store} matched to the dataset's {type(asked).__name__} key values by converting "
        f"them: the looked-up rows cannot be paired with the dataset's rows. Give the "
        f"dataset's key column the table's type (e.g. cast it with map_batches) or store "
        f"the keys as the dataset holds them")


class TableClient:
    """A connection to a lookup table, opened inside the worker that uses it.

    Subclasses set the capability flags and implement :meth:`fetch`, and
    :meth:`poll` when ``has_feed``.

    ``seq_is_snapshot``: ``fetch`` returns the feed head of the same snapshot and
    sequence numbers follow commit order (SQLite). Otherwise the cache uses its
    own feed cursor at fetch start, which is always safe.

    >>> TableClient().has_feed
    False
    """

    has_feed: bool = False
    feed_carries_rows: bool = False
    seq_is_snapshot: bool = False
    schema = None  # a pyarrow schema of the value columns, when known

    def fetch(self, keys: list) -> Fetched:
        """Rows for ``keys`` in one batched backend query."""
        raise NotImplementedError

    def poll(self, after: int) -> FeedPoll:
        """Changes with sequence number > ``after`` (only when ``has_feed``)."""
        raise NotImplementedError(f"{type(self).__name__} has no change feed")

    def head(self) -> int:
        """The feed's newest sequence number now (the cache follows the feed from here)."""
        return 0

    def horizon(self) -> Horizon | None:
        """The store's writers now, when a writer can commit a change numbered below the
        feed's head long after that head was read (PostgreSQL); None when it cannot."""
        return None

    def close(self) -> None:
        """Release the connection."""


class LookupTable:
    """A table that rows are looked up in by ``key``: picklable, connects lazily.

    >>> DictTable({}, key="id").describe()
    'DictTable(key=id)'
    """

    key: str = "key"

    def connect(self) -> TableClient:
        """A new client; called in the worker that will use it."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short name for plans and error messages."""
        return f"{type(self).__name__}(key={self.key})"


@dataclass
class DictTable(LookupTable):
    """A fixed in-process table (no feed): for examples and tests.

    >>> DictTable({"a": {"x": 1}}, key="name").connect().fetch(["a"]).rows
    {'a': {'x': 1}}
    """

    rows: dict = field(default_factory=dict)
    key: str = "key"

    def connect(self) -> TableClient:
        """A client reading ``rows``."""
        return _DictClient(self.rows)


class _DictClient(TableClient):
    def __init__(self, rows: dict) -> None:
        self.rows = rows
        # every value column any row holds: a batch with no match still gets them (null)
        self.columns = list({name: None for row in rows.values() for name in row})

    def fetch(self, keys: list) -> Fetched:
        return Fetched({k: dict(self.rows[k]) for k in keys if k in self.rows})
