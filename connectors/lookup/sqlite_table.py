"""SQLiteTable: the embedded lookup table, with a trigger-based change feed.

Triggers on the table append ``(seq, key, deleted, row as JSON)`` to a changes
table ``_sb_changes_<table>_<hash>`` (the hash is of the full table name, so
every table has its own; see ``identifiers``); every table and column name is
checked and quoted, never pasted into SQL; the feed is polled only when ``PRAGMA
data_version`` says another connection committed. A fetch reads the rows and
the feed head in one read transaction, so the cache knows exactly which
changes a fetched value already reflects.

>>> import sqlite3, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "t.db")
>>> db = sqlite3.connect(path)
>>> _ = db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
>>> db.execute("INSERT INTO users VALUES (1, 'ada')") and db.commit()
>>> client = SQLiteTable(path, "users", key="id").connect()
>>> client.fetch([1, 2]).rows
{1: {'name': 'ada'}}
>>> db.execute("UPDATE users SET name = 'grace' WHERE id = 1") and db.commit()
>>> [(c.key, c.row) for c in client.poll(client.head() - 1).changes]
[(1, {'name': 'grace'})]
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import pyarrow as pa
from streambatch.connectors.lookup.identifiers import (
    check_identifier,
    derived_name,
    quote_ident,
    quote_literal,
)
from streambatch.connectors.lookup.tables import (
    Change,
    FeedPoll,
    Fetched,
    LookupTable,
    TableClient,
    check_paired,
)

MAX_PARAMS = 30_000  # below SQLite's default limit of 32766 bound parameters per statement
_TYPES = {"INT": pa.int64(), "REAL": pa.float64(), "FLOA": pa.float64(), "DOUB": pa.float64(),
          "CHAR": pa.string(), "CLOB": pa.string(), "TEXT": pa.string(), "BLOB": pa.binary(),
          "BOOL": pa.bool_()}

_q = quote_ident
_MAX_NAME = 200  # SQLite has no limit; keep the derived names readable


def arrow_type(declared: str) -> pa.DataType | None:
    """The Arrow type of an SQLite declared column type (SQLite's affinity rules).

    >>> arrow_type("BIGINT"), arrow_type("varchar(10)"), arrow_type("")
    (DataType(int64), DataType(string), None)
    """
    upper = (declared or "").upper()
    return next((t for name, t in _TYPES.items() if name in upper), None)


def _check_names(spec: SQLiteTable) -> None:
    """Refuse, by name, a table, key or value column that cannot be quoted safely."""
    where = spec.describe()
    check_identifier(spec.table, "table", where)
    check_identifier(spec.key, "key", where)
    for column in spec.columns or ():
        check_identifier(column, "column", where)


@dataclass
class SQLiteTable(LookupTable):
    """A table in an SQLite file, looked up by ``key``; ``columns`` picks the
    value columns (default: all others). ``feed=False`` skips the triggers (the
    cache then falls back to TTL = bound). A ``file:...?mode=memory&cache=shared``
    URI works for thread workers in one process.

    >>> SQLiteTable("/tmp/x.db", "prices", key="sku").describe()
    "SQLiteTable('/tmp/x.db', table=prices, key=sku)"
    """

    path: str
    table: str
    key: str = "key"
    columns: tuple[str, ...] | None = None
    feed: bool = True
    timeout: float = 30.0

    def connect(self) -> SQLiteClient:
        """Open a connection (in the worker) and install the feed if asked."""
        return SQLiteClient(self)

    def describe(self) -> str:
        """Short name for plans and messages."""
        return f"SQLiteTable({self.path!r}, table={self.table}, key={self.key})"


def _carried_row(columns: list[str]) -> str:
    """The trigger's expression for the new row as JSON, or NULL (the cache then fetches
    the row) where a value is a BLOB, which JSON cannot hold: a column of no declared
    type may hold bytes, and json_object would fail the application's own write.

    >>> print(_carried_row(["a"]))
    CASE WHEN typeof(NEW."a") = 'blob' THEN NULL ELSE json_object('a', NEW."a") END
    """
    blob = " OR ".join(f"typeof(NEW.{_q(c)}) = 'blob'" for c in columns)
    obj = "json_object(" + ", ".join(f"{quote_literal(c)}, NEW.{_q(c)}" for c in columns) + ")"
    return f"CASE WHEN {blob} THEN NULL ELSE {obj} END" if columns else obj


class SQLiteClient(TableClient):
    """One SQLite connection serving fetches and feed polls."""

    seq_is_snapshot = True  # SQLite has one writer at a time: seq order is commit order

    def __init__(self, spec: SQLiteTable) -> None:
        self.spec = spec
        _check_names(spec)
        self.conn = sqlite3.connect(spec.path, isolation_level=None, check_same_thread=False,
                                    timeout=spec.timeout, uri=spec.path.startswith("file:"))
        info = self.conn.execute(f"PRAGMA table_info({_q(spec.table)})").fetchall()
        if not info:
            raise ValueError(f"{spec.describe()}: no table {spec.table!r} in {spec.path}; "
                             "create it (and its rows) before looking rows up")
        declared = {row[1]: row[2] for row in info}
        if spec.key not in declared:
            raise ValueError(f"{spec.describe()}: no key column {spec.key!r}; the table has "
                             f"{list(declared)}")
        self.columns = list(spec.columns or [c for c in declared if c != spec.key])
        missing = [c for c in self.columns if c not in declared]
        if missing:
            raise ValueError(f"{spec.describe()}: no column(s) {missing}; the table has "
                             f"{list(declared)}")
        self.schema = pa.schema([(c, arrow_type(declared[c]) or pa.null()) for c in self.columns])
        table = self._stored_name()
        self.changes = derived_name("_sb_changes_", "main", table, _MAX_NAME)
        self.triggers = tuple(derived_name(f"_sb_{op}_", "main", table, _MAX_NAME)
                              for op in ("ins", "upd", "del"))
        self.has_feed = spec.feed
        self.feed_carries_rows = not any("BLOB" in (t or "").upper() for t in declared.values())
        self._select = (f"SELECT {_q(spec.key)}, {', '.join(map(_q, self.columns))} "
                        f"FROM {_q(spec.table)} WHERE {_q(spec.key)} IN ")
        self._data_version, self._head = None, 0
        if spec.feed:
            self._install_feed(list(declared))
            self._data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
            self._head = self._max_seq()

    def _stored_name(self) -> str:
        """The table's name as the schema stores it (SQLite matches names without case,
        so ``Users`` and ``users`` are one table and must get one feed)."""
        found = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                  "name = ? COLLATE NOCASE", (self.spec.table,)).fetchone()
        return found[0] if found else self.spec.table

    def _install_feed(self, all_columns: list[str]) -> None:
        for column in all_columns:
            check_identifier(column, "column", self.spec.describe())
        t, k, ch = _q(self.spec.table), _q(self.spec.key), _q(self.changes)
        ins, upd, dele = map(_q, self.triggers)
        row = _carried_row(all_columns) if self.feed_carries_rows else "NULL"
        statements = [  # (re)made each time: a trigger of an earlier job may list the
            f"CREATE TABLE IF NOT EXISTS {ch} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key, deleted INTEGER NOT NULL, row TEXT)",  # columns the table had then
            *(f"DROP TRIGGER IF EXISTS {name}" for name in (ins, upd, dele)),
            f"CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN "
            f"INSERT INTO {ch}(key, deleted, row) VALUES (NEW.{k}, 0, {row}); END",
            f"CREATE TRIGGER {upd} AFTER UPDATE ON {t} BEGIN "
            f"INSERT INTO {ch}(key, deleted, row) SELECT OLD.{k}, 1, NULL WHERE OLD.{k} IS NOT NEW.{k}; "
            f"INSERT INTO {ch}(key, deleted, row) VALUES (NEW.{k}, 0, {row}); END",
            f"CREATE TRIGGER {dele} AFTER DELETE ON {t} BEGIN "
            f"INSERT INTO {ch}(key, deleted, row) VALUES (OLD.{k}, 1, NULL); END",
        ]
        statements += self._replace_triggers()
        wanted = {sql for sql in statements if sql.startswith("CREATE TRIGGER")}
        have = {sql for (sql,) in self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
            (self._stored_name(),))}
        changelog = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = ?", (self.changes,)).fetchone()
        if have == wanted and changelog:  # the feed as it should be: no schema change (every other
            return  # connection would prepare its statements again, the writer's too)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                self.conn.execute(sql)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _replace_triggers(self) -> list[str]:
        """Statements (re)making a trigger per UNIQUE index other than the key's: an
        ``INSERT OR REPLACE`` (or ``UPDATE OR REPLACE``) that collides on it deletes the
        other row, and SQLite fires no delete trigger for that unless the writer's own
        connection turned ``recursive_triggers`` on. Before the write, the rows it would
        replace are logged as deleted (a write that then fails is rolled back with its
        log; one that is ignored costs a refetch)."""
        t, k, ch = _q(self.spec.table), _q(self.spec.key), _q(self.changes)
        prefix = derived_name("_sb_rep_", "main", self._stored_name(), _MAX_NAME - 4)
        old = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND "
                                "name LIKE ? ESCAPE '\\'",
                                (prefix.replace("_", "\\_") + "%",)).fetchall()
        out = [f"DROP TRIGGER IF EXISTS {_q(name)}" for (name,) in old]
        indexes = self.conn.execute(f"PRAGMA index_list({t})").fetchall()
        for i, (_, name, unique, *_rest) in enumerate(indexes):
            columns = [row[2] for row in self.conn.execute(f"PRAGMA index_info({_q(name)})")]
            if not unique or columns == [self.spec.key] or None in columns:
                continue
            for when in ("INSERT", "UPDATE"):
                match = " AND ".join(f"{_q(c)} = NEW.{_q(c)}" for c in columns)
                out.append(f"CREATE TRIGGER {_q(f'{prefix}{when[0]}{i}')} BEFORE {when} ON {t} "
                           f"BEGIN INSERT INTO {ch}(key, deleted, row) SELECT {k}, 1, NULL "
                           f"FROM {t} WHERE {match} AND {k} IS NOT NEW.{k}; END")
        return out

    def _feed_gone(self) -> bool:
        """True when a trigger of the feed is missing (the table was dropped and made
        again, as ``pandas.to_sql(if_exists="replace")`` does): it is installed again,
        and the poll says the feed may have lost changes."""
        names = [name.lower() for name in self.triggers]
        found = self.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND lower(name) IN "
            f"({', '.join('?' * len(names))})", names).fetchone()[0]
        if found == len(names):
            return False
        info = self.conn.execute(f"PRAGMA table_info({_q(self.spec.table)})").fetchall()
        if info:  # (a table dropped and not made again: its fetches fail, naming it)
            self._install_feed([row[1] for row in info])
        return True

    def fetch(self, keys: list) -> Fetched:
        """Rows for ``keys`` and the feed head, in one read transaction."""
        rows = {}
        self.conn.execute("BEGIN")
        try:
            for i in range(0, len(keys), MAX_PARAMS):
                chunk = keys[i:i + MAX_PARAMS]
                sql = self._select + "(" + ",".join("?" * len(chunk)) + ")"
                for found in self.conn.execute(sql, chunk):
                    rows[found[0]] = dict(zip(self.columns, found[1:], strict=True))
            seq = self._max_seq() if self.has_feed else None
        finally:
            self.conn.execute("COMMIT")
        check_paired(self.spec.describe(), self.spec.key, keys, rows, "SQLite")
        return Fetched(rows, seq)

    def _max_seq(self) -> int:
        return self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {_q(self.changes)}").fetchone()[0]

    def head(self) -> int:
        """The newest change's sequence number."""
        return self._max_seq() if self.has_feed else 0

    def poll(self, after: int) -> FeedPoll:
        """Changes after ``after``; no query at all when no other connection committed."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and after >= self._head:
            return FeedPoll([], self._head)
        reset = self._feed_gone()
        self.conn.execute("BEGIN")
        try:
            found = self.conn.execute(
                f"SELECT seq, key, deleted, row FROM {_q(self.changes)} WHERE seq > ? ORDER BY seq",
                (after,)).fetchall()
            head = self._max_seq()
        finally:
            self.conn.execute("COMMIT")
        self._data_version, self._head = version, head
        changes = []
        for seq, key, deleted, row in found:
            values = json.loads(row) if row is not None else None
            if values is not None:  # a row carried without a column (a trigger made
                values = {c: values[c] for c in self.columns} \
                    if all(c in values for c in self.columns) else None  # before it): fetched
            changes.append(Change(seq, key, values, bool(deleted)))
        return FeedPoll(changes, head, reset=reset)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
