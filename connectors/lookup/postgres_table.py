"""PostgresTable: a PostgreSQL table with a trigger-fed changelog as its change feed.

A row trigger appends ``(seq bigserial, key, deleted, row jsonb)`` to
``sb_changes_<table>``; a poll reads the changes after the cache's cursor and
the head in one statement (one snapshot). Sequence numbers are taken at
insert, not at commit, so a poll can see a later number before an earlier
one commits: the cache treats that as a hole and trusts the feed only once it
is filled (or, after ``gap_timeout``, falls back to the lease). Fetches are
one ``WHERE key = ANY(%s)`` query. ``psycopg`` is imported only when a
client connects.

>>> PostgresTable("postgresql://u@127.0.0.1:5432/db", "prices", key="sku").describe()
"PostgresTable('postgresql://u@127.0.0.1:5432/db', table=prices, key=sku)"
"""

from __future__ import annotations

from dataclasses import dataclass

from streambatch.connectors.lookup.redis_table import require_module
from streambatch.connectors.lookup.tables import Change, FeedPoll, Fetched, LookupTable, TableClient

_JSON_SAFE = {"smallint", "integer", "bigint", "double precision", "real", "text",
              "character varying", "character", "boolean"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PostgresTable(LookupTable):
    """A table on a PostgreSQL server (``dsn`` as libpq takes it), looked up by ``key``.

    >>> PostgresTable("dbname=x", "t", key="id").feed
    True
    """

    dsn: str
    table: str
    key: str = "key"
    columns: tuple[str, ...] | None = None
    feed: bool = True

    def connect(self) -> PostgresClient:
        """Connect (in the worker) and install the changelog if asked."""
        return PostgresClient(self)

    def describe(self) -> str:
        """Short name for plans and messages."""
        return f"PostgresTable({self.dsn!r}, table={self.table}, key={self.key})"


class PostgresClient(TableClient):
    """One autocommit connection serving fetches and feed polls."""

    def __init__(self, spec: PostgresTable) -> None:
        psycopg = require_module("psycopg", "'streambatch[postgres]'  (or: pip install 'psycopg[binary]')")
        import pyarrow as pa

        self.spec = spec
        self.conn = psycopg.connect(spec.dsn, autocommit=True)
        declared = dict(self.conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = ANY(current_schemas(false)) "
            "ORDER BY ordinal_position", (spec.table,)).fetchall())
        if not declared:
            raise ValueError(f"{spec.describe()}: no table {spec.table!r} on the server; create it first")
        if spec.key not in declared:
            raise ValueError(f"{spec.describe()}: no key column {spec.key!r}; the table has {list(declared)}")
        self.columns = list(spec.columns or [c for c in declared if c != spec.key])
        missing = [c for c in self.columns if c not in declared]
        if missing:
            raise ValueError(f"{spec.describe()}: no column(s) {missing}; the table has {list(declared)}")
        arrow = {"smallint": pa.int64(), "integer": pa.int64(), "bigint": pa.int64(),
                 "double precision": pa.float64(), "real": pa.float64(), "text": pa.string(),
                 "character varying": pa.string(), "boolean": pa.bool_()}
        self.schema = pa.schema([(c, arrow.get(declared[c], pa.null())) for c in self.columns]) \
            if all(declared[c] in arrow for c in self.columns) else None
        self.changes = f"sb_changes_{spec.table}"
        self.has_feed = spec.feed
        self.feed_carries_rows = all(declared[c] in _JSON_SAFE for c in self.columns)
        self._select = (f"SELECT {_q(spec.key)}, {', '.join(map(_q, self.columns))} FROM "
                        f"{_q(spec.table)} WHERE {_q(spec.key)} = ANY(%s)")
        if spec.feed:
            self._install_feed(declared[spec.key])

    def _install_feed(self, key_type: str) -> None:
        t, k, ch = _q(self.spec.table), _q(self.spec.key), _q(self.changes)
        fn = _q(f"sb_log_{self.spec.table}")
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.changes,))
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {ch} (seq bigserial PRIMARY KEY, "
                              f"key {key_type}, deleted boolean NOT NULL, row jsonb)")
            self.conn.execute(f"""
                CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF TG_OP = 'DELETE' THEN
                    INSERT INTO {ch}(key, deleted, row) VALUES (OLD.{k}, true, NULL);
                    RETURN OLD;
                  END IF;
                  IF TG_OP = 'UPDATE' AND OLD.{k} IS DISTINCT FROM NEW.{k} THEN
                    INSERT INTO {ch}(key, deleted, row) VALUES (OLD.{k}, true, NULL);
                  END IF;
                  INSERT INTO {ch}(key, deleted, row) VALUES (NEW.{k}, false, to_jsonb(NEW));
                  RETURN NEW;
                END $$""")
            self.conn.execute(f"CREATE OR REPLACE TRIGGER {fn} AFTER INSERT OR UPDATE OR DELETE "
                              f"ON {t} FOR EACH ROW EXECUTE FUNCTION {fn}()")

    def fetch(self, keys: list) -> Fetched:
        """Rows for ``keys`` in one query."""
        found = self.conn.execute(self._select, (list(keys),)).fetchall()
        return Fetched({row[0]: dict(zip(self.columns, row[1:], strict=True)) for row in found})

    def head(self) -> int:
        """The newest sequence number in the changelog."""
        return self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {_q(self.changes)}").fetchone()[0]

    def poll(self, after: int) -> FeedPoll:
        """Changes after ``after`` and the head, in one statement."""
        ch = _q(self.changes)
        found = self.conn.execute(
            f"WITH h AS (SELECT coalesce(max(seq), 0) AS m FROM {ch}) "
            f"SELECT h.m, c.seq, c.key, c.deleted, c.row FROM h LEFT JOIN {ch} c ON c.seq > %s "
            "ORDER BY c.seq", (after,)).fetchall()
        changes = [Change(seq, key, None if row is None else {c: row.get(c) for c in self.columns},
                          deleted) for _, seq, key, deleted, row in found if seq is not None]
        return FeedPoll(changes, found[0][0] if found else after)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
