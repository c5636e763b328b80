"""PostgresTable: a PostgreSQL table with a trigger-fed changelog as its change feed.

A row trigger appends ``(seq bigserial, key, deleted, row jsonb)`` to a
changelog in the table's schema, ``sb_changes_<table>_<hash>`` (trigger and
function ``sb_log_<table>_<hash>``): the hash is of the schema-qualified table
name and the name stays within PostgreSQL's 63 bytes, so no two tables share a
changelog. Every name is checked and quoted, and the trigger names its
changelog with its schema, so writers with any ``search_path`` feed it. A poll reads the changes after the cache's cursor and
the head in one statement (one snapshot). Sequence numbers are taken at
insert, not at commit, so a poll can see a later number before an earlier
one commits: the cache treats that as a hole and trusts the feed only once it
is filled (or, after ``gap_timeout``, falls back to the lease). A hole given
up on may still be filled by a writer that commits later, below the cache's
cursor, where no poll looks: so each poll also reads the writers' horizon
(the snapshot's xmin and xmax, PostgreSQL 13 or later), and entries fetched
while a writer that took a skipped number may still commit keep only their
lease (TTL = the bound) until every such writer has ended. Fetches are
one ``WHERE key = ANY(%s)`` query. ``psycopg`` is imported only when a
client connects.

>>> PostgresTable("postgresql://u@127.0.0.1:5432/db", "prices", key="sku").describe()
"PostgresTable('postgresql://u@127.0.0.1:5432/db', table=prices, key=sku)"
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streambatch.connectors.lookup.identifiers import (
    PG_MAX_NAME_BYTES,
    check_identifier,
    derived_name,
    quote_ident,
)
from streambatch.connectors.lookup.tables import (
    Change,
    FeedPoll,
    Fetched,
    Horizon,
    LookupTable,
    TableClient,
    check_paired,
)

from streambatch._dependencies import import_optional

_JSON_SAFE = {"smallint", "integer", "bigint", "double precision", "real", "text",
              "character varying", "character", "boolean"}
_ARROW = {"smallint": "int64", "integer": "int64", "bigint": "int64", "double precision": "float64",
          "real": "float64", "text": "string", "character varying": "string", "boolean": "bool_"}
_q = quote_ident


def _horizon_sql(snapshot: str) -> str:
    """The select list of a snapshot's oldest running transaction and first unassigned one.

    >>> _horizon_sql("s")
    'pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint'
    """
    return f"pg_snapshot_xmin({snapshot})::text::bigint, pg_snapshot_xmax({snapshot})::text::bigint"


@dataclass
class PostgresTable(LookupTable):
    """A table on a PostgreSQL server (``dsn`` as libpq takes it), looked up by
    ``key``. ``schema`` names the table's schema; None finds ``table`` the way an
    unqualified name in a query would (the connection's ``search_path``).

    >>> PostgresTable("dbname=x", "t", key="id").feed
    True
    """

    dsn: str
    table: str
    key: str = "key"
    columns: tuple[str, ...] | None = None
    feed: bool = True
    schema: str | None = None

    def connect(self) -> PostgresClient:
        """Connect (in the worker) and install the changelog if asked."""
        return PostgresClient(self)

    def describe(self) -> str:
        """Short name for plans and messages."""
        table = self.table if self.schema is None else f"{self.schema}.{self.table}"
        return f"PostgresTable({self.dsn!r}, table={table}, key={self.key})"


def dollar_tag(body: str) -> str:
    """A dollar-quote tag that does not occur in ``body`` (which holds quoted user
    names, and a name may hold ``$$``), so the body cannot end early.

    >>> dollar_tag("SELECT 1"), dollar_tag('SELECT "a$sb$b"')
    ('$sb$', '$sb1$')
    """
    tag, n = "$sb$", 0
    while tag in body:
        n += 1
        tag = f"$sb{n}$"
    return tag


def _check_names(spec: PostgresTable) -> None:
    """Refuse, by name, any name of ``spec`` that cannot address its object when quoted."""
    where = spec.describe()
    named = [("table", spec.table), ("key", spec.key)] + [("column", c) for c in spec.columns or ()]
    if spec.schema is not None:
        named.append(("schema", spec.schema))
    for what, name in named:
        check_identifier(name, what, where, PG_MAX_NAME_BYTES)


_TRUNCATED = '{"__sb_truncated": true}'  # the changelog's row for a TRUNCATE
_TRUNCATED_ROW = json.loads(_TRUNCATED)  # ... as a poll reads it back


class PostgresClient(TableClient):
    """One autocommit connection serving fetches and feed polls."""

    def __init__(self, spec: PostgresTable) -> None:
        psycopg = import_optional("psycopg", extra="postgres", what="PostgresTable")
        _check_names(spec)
        self.spec = spec
        self.conn = psycopg.connect(spec.dsn, autocommit=True)
        self.namespace, relid = self._resolve()
        declared, full_types = self._declared(relid)
        self.schema = self._arrow_schema(declared)
        self.changes = derived_name("sb_changes_", self.namespace, spec.table)
        self.function = derived_name("sb_log_", self.namespace, spec.table)  # and its trigger
        self.truncated = derived_name("sb_trunc_", self.namespace, spec.table)  # its TRUNCATE one
        self.has_feed = spec.feed
        self.feed_carries_rows = all(declared[c] in _JSON_SAFE for c in self.columns)
        self._table = f"{_q(self.namespace)}.{_q(spec.table)}"
        self._changelog = f"{_q(self.namespace)}.{_q(self.changes)}"
        self._select = (f"SELECT {_q(spec.key)}, {', '.join(map(_q, self.columns))} FROM "
                        f"{self._table} WHERE {_q(spec.key)} = ANY(%s)")
        self._key_type = full_types[spec.key]
        if spec.feed:
            self._install_feed(self._key_type)

    def _resolve(self) -> tuple[str, int]:
        """The table's schema and oid: in ``spec.schema``, or as the search_path finds it."""
        spec = self.spec
        args: tuple[str, ...]
        if spec.schema is None:
            where, args = "c.oid = to_regclass(%s)", (_q(spec.table),)
        else:
            where, args = "n.nspname = %s AND c.relname = %s", (spec.schema, spec.table)
        found = self.conn.execute("SELECT n.nspname, c.oid FROM pg_class c JOIN pg_namespace n "
                                  f"ON n.oid = c.relnamespace WHERE {where}", args).fetchone()
        if found is None:
            place = (f"in schema {spec.schema!r}" if spec.schema is not None
                     else "on the connection's search_path")
            raise ValueError(f"{spec.describe()}: no table {spec.table!r} {place} on the server; "
                             "create it first (or pass schema=...)")
        return found[0], found[1]

    def _declared(self, relid: int) -> tuple[dict, dict]:
        """Column -> base type name, and column -> full SQL type; sets ``columns``."""
        spec = self.spec
        found = self.conn.execute(
            "SELECT attname, format_type(atttypid, NULL), format_type(atttypid, atttypmod) "
            "FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum", (relid,)).fetchall()
        declared = {name: base for name, base, _ in found}
        if spec.key not in declared:
            raise ValueError(f"{spec.describe()}: no key column {spec.key!r}; the table has {list(declared)}")
        self.columns = list(spec.columns or [c for c in declared if c != spec.key])
        missing = [c for c in self.columns if c not in declared]
        if missing:
            raise ValueError(f"{spec.describe()}: no column(s) {missing}; the table has {list(declared)}")
        return declared, {name: full for name, _, full in found}

    def _arrow_schema(self, declared: dict):
        """The Arrow schema of the value columns, or None when a column type has no mapping."""
        import pyarrow as pa
        if not all(declared[c] in _ARROW for c in self.columns):
            return None
        return pa.schema([(c, getattr(pa, _ARROW[declared[c]])()) for c in self.columns])

    def _install_feed(self, key_type: str) -> None:
        """Create (or replace) the changelog, the trigger function and the trigger."""
        k, ch, fn = _q(self.spec.key), self._changelog, f"{_q(self.namespace)}.{_q(self.function)}"
        body = f"""
                BEGIN
                  IF TG_OP = 'TRUNCATE' THEN
                    INSERT INTO {ch}(key, deleted, row) VALUES (NULL, true, '{_TRUNCATED}');
                    RETURN NULL;
                  END IF;
                  IF TG_OP = 'DELETE' THEN
                    INSERT INTO {ch}(key, deleted, row) VALUES (OLD.{k}, true, NULL);
                    RETURN OLD;
                  END IF;
                  IF TG_OP = 'UPDATE' AND OLD.{k} IS DISTINCT FROM NEW.{k} THEN
                    INSERT INTO {ch}(key, deleted, row) VALUES (OLD.{k}, true, NULL);
                  END IF;
                  INSERT INTO {ch}(key, deleted, row) VALUES (NEW.{k}, false, to_jsonb(NEW));
                  RETURN NEW;
                END """
        tag = dollar_tag(body)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._changelog,))
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {ch} (seq bigserial PRIMARY KEY, "
                              f"key {key_type}, deleted boolean NOT NULL, row jsonb)")
            self.conn.execute(f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
                              f"AS {tag}{body}{tag}")
            self.conn.execute(f"CREATE OR REPLACE TRIGGER {_q(self.function)} AFTER INSERT OR UPDATE "
                              f"OR DELETE ON {self._table} FOR EACH ROW EXECUTE FUNCTION {fn}()")
            self.conn.execute(f"CREATE OR REPLACE TRIGGER {_q(self.truncated)} AFTER TRUNCATE "
                              f"ON {self._table} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")

    def _feed_gone(self) -> bool:
        """True when the feed's trigger is missing (the table was dropped and made again,
        as ``pandas.to_sql(if_exists="replace")`` does): it is installed again, and the
        poll says the feed may have lost changes."""
        found = self.conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                                  "to_regclass(%s) AND tgname = %s",
                                  (self._table, self.function)).fetchone()[0]
        if found:
            return False
        if self.conn.execute("SELECT to_regclass(%s)", (self._table,)).fetchone()[0]:
            self._install_feed(self._key_type)  # (no table: its fetches fail, naming it)
        return True

    def fetch(self, keys: list) -> Fetched:
        """Rows for ``keys`` in one query; a row PostgreSQL matched only by casting the
        dataset's key (bigint ``1`` for ``'1'``) is refused, naming both types."""
        found = self.conn.execute(self._select, (list(keys),)).fetchall()
        rows = {row[0]: dict(zip(self.columns, row[1:], strict=True)) for row in found}
        check_paired(self.spec.describe(), self.spec.key, keys, rows, "PostgreSQL")
        return Fetched(rows)

    def head(self) -> int:
        """The newest sequence number in the changelog."""
        return self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {self._changelog}").fetchone()[0]

    def horizon(self) -> Horizon:
        """The server's writers now: the xmin and xmax of the current snapshot."""
        ended, begun = self.conn.execute(f"SELECT {_horizon_sql('s')} FROM pg_current_snapshot() s").fetchone()
        return Horizon(ended, begun)

    def poll(self, after: int) -> FeedPoll:
        """Changes after ``after``, the head and the writers' horizon, in one statement; a
        TRUNCATE (no row trigger fires for it) or a table made again is a reset."""
        reset = self._feed_gone()
        ch = self._changelog
        found = self.conn.execute(
            f"WITH h AS (SELECT coalesce(max(seq), 0) AS m, pg_current_snapshot() AS s FROM {ch}) "
            f"SELECT h.m, {_horizon_sql('h.s')}, c.seq, c.key, c.deleted, c.row "
            f"FROM h LEFT JOIN {ch} c ON c.seq > %s ORDER BY c.seq", (after,)).fetchall()
        rows = [r for r in found if r[3] is not None]
        reset = reset or any(row == _TRUNCATED_ROW for *_, row in rows)
        changes = [Change(seq, key, None if row is None or row == _TRUNCATED_ROW
                          else {c: row.get(c) for c in self.columns}, deleted)
                   for _, _, _, seq, key, deleted, row in rows]  # (a TRUNCATE's: key None)
        head, ended, begun = found[0][:3]
        return FeedPoll(changes, head, reset=reset, horizon=Horizon(ended, begun))

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
