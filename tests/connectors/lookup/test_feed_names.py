"""Names and identifiers of the change feeds that lookup tables install, on real
SQLite files and a real PostgreSQL server: every table gets its own changelog
and triggers (named from a hash of its full name), crafted table and column
names stay identifiers (or are refused), and nothing else is left behind."""

from __future__ import annotations

import sqlite3

import pytest
from streambatch.connectors.lookup import FreshCache, PostgresTable, SQLiteTable

# A name that ends a string literal, closes the trigger's INSERT, and would add a
# statement of its own to the trigger body if it were pasted into SQL.
LITERAL_BREAKER = "v', 1)); DELETE FROM audit; SELECT (json_object('v"
IDENT_BREAKER = 'x"); DROP TABLE t; --'
# ...ends a PostgreSQL dollar-quoted function body.
DOLLAR_BREAKER = "k$$; DROP TABLE victim; --"
CRAFTED = [LITERAL_BREAKER, IDENT_BREAKER, DOLLAR_BREAKER, "it's \"both\" -- /*"]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---- SQLite ---------------------------------------------------------------------------
def _sqlite_db(path: str, table: str, column: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE audit (n INTEGER)")
    conn.execute("INSERT INTO audit VALUES (1), (2)")
    conn.execute("CREATE TABLE t (id INTEGER)")  # the table IDENT_BREAKER names
    conn.execute(f"CREATE TABLE {_q(table)} (id INTEGER PRIMARY KEY, {_q(column)} TEXT)")
    conn.executemany(f"INSERT INTO {_q(table)} VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.commit()
    conn.close()


def _sqlite_objects(path: str) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT type, name FROM sqlite_master"))
    finally:
        conn.close()


@pytest.mark.parametrize("column", CRAFTED)
def test_sqlite_crafted_column_is_a_quoted_identifier_in_the_feed(tmp_path, column):
    path = str(tmp_path / "crafted.db")
    _sqlite_db(path, "users", column)
    before = _sqlite_objects(path)
    cache = FreshCache(60.0, poll_interval=0.0).open(SQLiteTable(path, "users", key="id"))
    assert cache.get_many([1, 2]) == {1: {column: "a"}, 2: {column: "b"}}
    writer = sqlite3.connect(path)
    writer.execute(f"UPDATE users SET {_q(column)} = 'changed' WHERE id = 1")
    writer.execute("INSERT INTO users VALUES (3, 'new')")
    writer.commit()
    assert cache.get_many([1, 2, 3]) == {1: {column: "changed"}, 2: {column: "b"}, 3: {column: "new"}}
    assert cache.stats()["feed_changes"] == 2  # the feed carried both writes, rows and all
    assert writer.execute("SELECT n FROM audit ORDER BY n").fetchall() == [(1,), (2,)]
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (0,)
    writer.close()
    client = cache.client
    added = _sqlite_objects(path) - before
    triggers = {name for kind, name in added if kind == "trigger"}
    assert added == {("table", client.changes), ("table", "sqlite_sequence")} | {
        ("trigger", name) for name in triggers}
    assert len(triggers) == 3
    cache.close()


def test_sqlite_crafted_table_name_and_tables_sharing_a_long_prefix(tmp_path):
    path = str(tmp_path / "long.db")
    prefix = "p" * 70 + IDENT_BREAKER
    _sqlite_db(path, prefix + "_a", "v")
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {_q(prefix + '_b')} (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute(f"INSERT INTO {_q(prefix + '_b')} VALUES (1, 'b1')")
    conn.commit()
    a = FreshCache(60.0, poll_interval=0.0).open(SQLiteTable(path, prefix + "_a", key="id"))
    b = FreshCache(60.0, poll_interval=0.0).open(SQLiteTable(path, prefix + "_b", key="id"))
    assert a.client.changes != b.client.changes
    assert (a.get_many([1]), b.get_many([1])) == ({1: {"v": "a"}}, {1: {"v": "b1"}})
    conn.execute(f"UPDATE {_q(prefix + '_a')} SET v = 'a2' WHERE id = 1")
    conn.commit()
    assert (a.get_many([1]), b.get_many([1])) == ({1: {"v": "a2"}}, {1: {"v": "b1"}})
    assert b.stats()["feed_changes"] == 0
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    conn.close()
    a.close()
    b.close()


def test_sqlite_one_table_named_in_two_cases_has_one_feed(tmp_path):
    path = str(tmp_path / "case.db")
    _sqlite_db(path, "Users", "v")
    lower = SQLiteTable(path, "users", key="id").connect()
    upper = SQLiteTable(path, "USERS", key="id").connect()
    assert lower.changes == upper.changes and lower.triggers == upper.triggers
    triggers = {name for kind, name in _sqlite_objects(path) if kind == "trigger"}
    assert triggers == set(lower.triggers)
    lower.close()
    upper.close()


@pytest.mark.parametrize("field", ["table", "key", "columns"])
def test_sqlite_names_that_cannot_be_quoted_are_refused_by_name(tmp_path, field):
    path = str(tmp_path / "nul.db")
    _sqlite_db(path, "users", "v")
    before = _sqlite_objects(path)
    args = {"table": "users", "key": "id", "columns": None}
    args[field] = ("v\x00x",) if field == "columns" else "us\x00ers"
    with pytest.raises(ValueError, match=rf"{field.rstrip('s')} '.*\\x00.*' contains a NUL byte"):
        SQLiteTable(path, **args).connect()
    assert _sqlite_objects(path) == before


# ---- PostgreSQL -----------------------------------------------------------------------
@pytest.fixture
def pg(postgres_dsn):
    import psycopg
    conn = psycopg.connect(postgres_dsn, autocommit=True)
    conn.execute("DROP SCHEMA IF EXISTS feeds CASCADE")
    conn.execute("CREATE SCHEMA feeds")
    yield conn
    conn.execute("DROP SCHEMA IF EXISTS feeds CASCADE")
    conn.close()


def _pg_objects(conn) -> set[tuple[str, str]]:
    """Relations, functions and triggers in schema ``feeds``."""
    rels = conn.execute("SELECT 'rel', c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'feeds'").fetchall()
    fns = conn.execute("SELECT 'fn', p.proname FROM pg_proc p JOIN pg_namespace n "
                       "ON n.oid = p.pronamespace WHERE n.nspname = 'feeds'").fetchall()
    trs = conn.execute("SELECT 'trigger', t.tgname || ' on ' || c.relname FROM pg_trigger t "
                       "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
                       "ON n.oid = c.relnamespace WHERE n.nspname = 'feeds'").fetchall()
    return set(rels) | set(fns) | set(trs)


def _pg_parts(conn, changelog: str) -> set[tuple[str, str]]:
    """The sequence and the primary-key index that belong to ``changelog``."""
    oid = conn.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'feeds' AND c.relname = %s", (changelog,)).fetchone()[0]
    parts = conn.execute("SELECT c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid "
                         "WHERE d.refobjid = %s AND d.classid = 'pg_class'::regclass "
                         "AND c.relnamespace = 'feeds'::regnamespace", (oid,))
    index = conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                         "WHERE i.indrelid = %s", (oid,))
    found = {("rel", name) for (name,) in [*parts, *index]}
    assert len(found) == 2, found
    return found


def _pg_table(conn, name: str, column: str, rows: list, key: str = "id") -> None:
    conn.execute(f"CREATE TABLE feeds.{_q(name)} ({_q(key)} bigint PRIMARY KEY, {_q(column)} text)")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO feeds.{_q(name)} VALUES (%s, %s)", rows)


def _dsn(postgres_dsn: str, search_path: str) -> str:
    return f"{postgres_dsn} options='-csearch_path={search_path}'"


def test_postgres_tables_sharing_a_long_prefix_get_their_own_changelogs(postgres_dsn, pg):
    import psycopg
    prefix = "p" * 60  # with "_a"/"_b": 62 bytes, inside PostgreSQL's 63-byte names
    _pg_table(pg, prefix + "_a", "v", [(1, "a1"), (2, "a2")])
    _pg_table(pg, prefix + "_b", "v", [(1, "b1"), (2, "b2")])
    dsn = _dsn(postgres_dsn, "feeds")
    a = FreshCache(60.0, poll_interval=0.0).open(PostgresTable(dsn, prefix + "_a", key="id"))
    b = FreshCache(60.0, poll_interval=0.0).open(PostgresTable(dsn, prefix + "_b", key="id"))
    assert a.client.changes != b.client.changes
    assert (a.get_many([1, 2]), b.get_many([1, 2])) == (
        {1: {"v": "a1"}, 2: {"v": "a2"}}, {1: {"v": "b1"}, 2: {"v": "b2"}})
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute(f"UPDATE {_q(prefix + '_a')} SET v = 'A1' WHERE id = 1")
        writer.execute(f"UPDATE {_q(prefix + '_b')} SET v = 'B2' WHERE id = 2")
    assert a.get_many([1, 2]) == {1: {"v": "A1"}, 2: {"v": "a2"}}
    assert b.get_many([1, 2]) == {1: {"v": "b1"}, 2: {"v": "B2"}}
    assert a.stats()["feed_changes"] == 1 and b.stats()["feed_changes"] == 1
    for name in (prefix + "_a", prefix + "_b"):  # each table's changelog holds its own rows only
        log = f"feeds.{_q((a if name.endswith('_a') else b).client.changes)}"
        assert [r[0]["v"] for r in pg.execute(f"SELECT row FROM {log}")] == [
            "A1" if name.endswith("_a") else "B2"]
    a.close()
    b.close()


@pytest.mark.parametrize("column", CRAFTED)
def test_postgres_crafted_names_stay_identifiers(postgres_dsn, pg, column):
    _pg_table(pg, "victim", "v", [(1, "keep")])
    key = column + " key"  # the key column is the one the trigger function names
    _pg_table(pg, column, column, [(1, "a"), (2, "b")], key=key)
    before = _pg_objects(pg)
    cache = FreshCache(60.0, poll_interval=0.0).open(
        PostgresTable(_dsn(postgres_dsn, "feeds"), column, key=key))
    assert cache.get_many([1, 2]) == {1: {column: "a"}, 2: {column: "b"}}
    pg.execute(f"UPDATE feeds.{_q(column)} SET {_q(column)} = 'changed' WHERE {_q(key)} = 1")
    pg.execute(f"DELETE FROM feeds.{_q(column)} WHERE {_q(key)} = 2")
    assert cache.get_many([1, 2]) == {1: {column: "changed"}}
    assert cache.stats()["feed_changes"] == 2
    assert pg.execute("SELECT v FROM feeds.victim").fetchall() == [("keep",)]
    client = cache.client
    added = _pg_objects(pg) - before
    assert added == {("rel", client.changes), ("fn", client.function),
                     ("trigger", f"{client.function} on {column}"),
                     ("trigger", f"{client.truncated} on {column}")} | _pg_parts(pg, client.changes)
    cache.close()


def test_postgres_feed_is_found_from_any_search_path(postgres_dsn, pg):
    """The trigger names its changelog with its schema: a writer whose search_path
    does not hold the table's schema still writes, and the change is seen."""
    import psycopg
    _pg_table(pg, "items", "v", [(1, "a")])
    cache = FreshCache(60.0, poll_interval=0.0).open(
        PostgresTable(_dsn(postgres_dsn, "feeds"), "items", key="id"))
    assert cache.get_many([1]) == {1: {"v": "a"}}
    with psycopg.connect(_dsn(postgres_dsn, "public"), autocommit=True) as writer:
        writer.execute("UPDATE feeds.items SET v = 'b' WHERE id = 1")
    assert cache.get_many([1]) == {1: {"v": "b"}}
    cache.close()


def test_postgres_schema_picks_the_table_and_its_feed(postgres_dsn, pg):
    pg.execute("DROP SCHEMA IF EXISTS feeds2 CASCADE; CREATE SCHEMA feeds2")
    try:
        _pg_table(pg, "items", "v", [(1, "one")])
        pg.execute("CREATE TABLE feeds2.items (id bigint PRIMARY KEY, w text)")
        pg.execute("INSERT INTO feeds2.items VALUES (1, 'two')")
        one = FreshCache(60.0, poll_interval=0.0).open(
            PostgresTable(_dsn(postgres_dsn, "feeds2,feeds"), "items", key="id", schema="feeds"))
        two = FreshCache(60.0, poll_interval=0.0).open(
            PostgresTable(_dsn(postgres_dsn, "feeds2,feeds"), "items", key="id"))
        assert (one.get_many([1]), two.get_many([1])) == ({1: {"v": "one"}}, {1: {"w": "two"}})
        pg.execute("UPDATE feeds.items SET v = 'uno' WHERE id = 1")
        assert (one.get_many([1]), two.get_many([1])) == ({1: {"v": "uno"}}, {1: {"w": "two"}})
        assert one.client.changes != two.client.changes
        one.close()
        two.close()
    finally:
        pg.execute("DROP SCHEMA feeds2 CASCADE")


@pytest.mark.parametrize("field", ["table", "key", "columns", "schema"])
def test_postgres_names_that_cannot_be_quoted_are_refused_by_name(postgres_dsn, pg, field):
    _pg_table(pg, "items", "v", [(1, "a")])
    before = _pg_objects(pg)
    args = {"table": "items", "key": "id", "columns": None, "schema": "feeds"}
    args[field] = ("v\x00x",) if field == "columns" else "it\x00ems"
    with pytest.raises(ValueError, match=rf"{field.rstrip('s')} '.*\\x00.*' contains a NUL byte"):
        PostgresTable(postgres_dsn, **args).connect()
    with pytest.raises(ValueError, match="66 bytes.*first 63 bytes"):
        PostgresTable(postgres_dsn, "i" * 66, key="id", schema="feeds").connect()
    assert _pg_objects(pg) == before
