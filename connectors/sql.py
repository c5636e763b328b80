"""SQL databases through DB-API 2 (PEP 249) connections, as Ray Data's ``read_sql`` and
``Dataset.write_sql``: the user passes a ``connection_factory`` (a picklable function
returning a new connection: ``functools.partial(sqlite3.connect, path)``,
``lambda: psycopg.connect(dsn)``...), so this module imports no driver.

Reads run the query (``sql``) in read tasks and stream its rows as blocks. Writes run a
parameterised statement once per row, in the driver's own parameter style (``?`` for
sqlite3, ``%s`` for psycopg), with each row's values in column order; each write task
runs in one transaction (see :class:`SQLSink`).

>>> import functools, sqlite3, tempfile
>>> from streambatch.connectors.datasource import Pushdowns
>>> db = tempfile.mkdtemp() + "/a.db"
>>> with sqlite3.connect(db) as c:
...     _ = c.execute("CREATE TABLE t (x INTEGER, s TEXT)")
...     _ = c.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, None)])
>>> src = SQLSource("SELECT x, s FROM t ORDER BY x", functools.partial(sqlite3.connect, db))
>>> [t.to_pylist() for task in src.read_tasks(4, Pushdowns()) for t in task()]
[[{'x': 1, 's': 'a'}, {'x': 2, 's': None}]]
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pyarrow as pa
from streambatch.connectors.datasource import Datasource, Pushdowns, ReadTask
from streambatch.connectors.sink_contract import Datasink

ROWS_PER_FETCH = 4096      # rows fetched (and made into one block) at a time
ROWS_PER_EXECUTEMANY = 128  # rows per executemany call (Ray's _MAX_ROWS_PER_WRITE)
MIN_ROWS_PER_READ_TASK = 50  # Ray's: fewer rows than this per shard is not worth a task
PEP249 = "https://peps.python.org/pep-0249/"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class SQLError(RuntimeError):
    """A query or statement failed; the message names the SQL, where (task, rows) and the
    database's error, which is the ``__cause__``.

    >>> str(SQLError("read_sql", "SELECT 1", ValueError("boom")))
    "read_sql: SQL 'SELECT 1' failed: ValueError: boom"
    """

    def __init__(self, who: str, sql: str, cause: BaseException, where: str = "",
                 hint: str = "") -> None:
        self.sql = sql
        text = f"{who}: SQL {_short(sql)!r}{' (' + where + ')' if where else ''} failed: " \
               f"{type(cause).__name__}: {cause}"
        super().__init__(text + (f"; {hint}" if hint else ""))

    def __reduce__(self):
        return (_rebuild, (str(self), self.sql))


def _rebuild(message: str, sql: str) -> SQLError:
    err = SQLError.__new__(SQLError)
    RuntimeError.__init__(err, message)
    err.sql = sql
    return err


def _short(sql: str, limit: int = 200) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= limit else sql[: limit - 3] + "..."


def _check(obj, kind: str, attrs: tuple[str, ...], who: str) -> None:
    for attr in attrs:
        if not hasattr(obj, attr):
            raise ValueError(f"{who}: the connection_factory's {kind} ({type(obj).__name__}) "
                             f"has no {attr!r}, which DB-API 2 requires ({PEP249}); pass a "
                             "function returning a DB-API 2 connection, e.g. "
                             "functools.partial(sqlite3.connect, path)")


@contextmanager
def connect(factory: Callable[[], Any], who: str) -> Iterator[Any]:
    """A cursor on a new connection from ``factory``: committed when the block ends,
    rolled back on an error; the connection is closed either way."""
    if not callable(factory):
        raise TypeError(f"{who}: connection_factory must be a function returning a DB-API 2 "
                        f"connection, got {type(factory).__name__}")
    connection = factory()
    _check(connection, "connection", ("cursor", "commit", "close"), who)
    try:
        cursor = connection.cursor()
        _check(cursor, "cursor", ("execute", "executemany", "fetchmany", "description"), who)
        yield cursor
        connection.commit()
    except BaseException:
        try:
            connection.rollback()
        except Exception:  # noqa: S110 - rollback is optional in DB-API 2; the error wins
            pass
        raise
    finally:
        connection.close()


def _execute(cursor, sql: str, who: str, where: str = "", params=None) -> None:
    try:
        cursor.execute(sql) if params is None else cursor.execute(sql, params)
    except Exception as exc:
        raise SQLError(who, sql, exc, where) from exc


class SQLSource(Datasource):
    """The rows of a query. Without ``shard_keys`` one task reads them all (streaming
    them in blocks of ``ROWS_PER_FETCH``); with ``shard_keys`` and a database that has
    ``MOD``, ``ABS`` and ``MD5`` returning a number, as Ray Data, shard ``i`` of ``n``
    reads the rows where ``MOD(ABS(MD5(keys)), n) = i`` (each row in exactly one shard);
    a database without them (SQLite, PostgreSQL) is read by one task."""

    name = "SQL"
    who = "read_sql"

    def __init__(self, sql: str, connection_factory: Callable[[], Any],
                 shard_keys: list[str] | None = None) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"read_sql: sql={sql!r}; expected a SELECT query (a str)")
        if not callable(connection_factory):
            raise TypeError(f"read_sql: connection_factory must be a function returning a "
                            f"DB-API 2 connection, got {type(connection_factory).__name__}")
        if shard_keys is not None and (isinstance(shard_keys, str) or not all(
                isinstance(k, str) and k for k in shard_keys)):
            raise ValueError(f"read_sql: shard_keys={shard_keys!r}; expected a list of column "
                             "names, e.g. ['id']")
        self.sql = sql.strip().rstrip(";")
        self.connection_factory = connection_factory
        keys = list(shard_keys or [])
        self.shard_expr = (f"CONCAT({','.join(keys)})" if len(keys) > 1 else
                           keys[0] if keys else None)

    def _count(self) -> int:
        sql = f"SELECT COUNT(*) FROM ({self.sql}) AS T"
        with connect(self.connection_factory, self.who) as cursor:
            try:
                cursor.execute(sql)
                return int(cursor.fetchone()[0])
            except Exception as exc:
                raise SQLError(self.who, self.sql, exc, f"counting its rows with {sql!r}",
                               "check the query runs in your database client") from exc

    def _shardable(self, parallelism: int) -> bool:
        if parallelism <= 1 or self.shard_expr is None:
            return False
        try:
            with connect(self.connection_factory, self.who) as cursor:
                cursor.execute(f"SELECT COUNT(1) FROM ({self.sql}) AS T WHERE "
                               f"MOD(ABS(MD5({self.shard_expr})), {parallelism}) = 0")
                cursor.fetchall()
            return True
        except Exception:
            return False

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """One task, or ``parallelism`` hash shards (see the class docstring)."""
        total = self._count()
        if total == 0:
            return []
        parallelism = max(1, min(self.parallelism or parallelism,
                                 math.ceil(total / MIN_ROWS_PER_READ_TASK)))
        if not self._shardable(parallelism):
            return [ReadTask(partial(self._read, self.sql, "the query"), total, None,
                             f"SQL {_short(self.sql, 60)!r}")]
        base, extra = divmod(total, parallelism)
        return [ReadTask(partial(self._read,
                                 f"SELECT * FROM ({self.sql}) AS T WHERE "
                                 f"MOD(ABS(MD5({self.shard_expr})), {parallelism}) = {i}",
                                 f"shard {i} of {parallelism}"),
                         base + (i < extra), None, f"SQL shard {i}/{parallelism}")
                for i in range(parallelism)]

    def _read(self, sql: str, where: str) -> Iterator[pa.Table]:
        with connect(self.connection_factory, self.who) as cursor:
            _execute(cursor, sql, self.who, where)
            if cursor.description is None:
                raise SQLError(self.who, sql, ValueError("it returns no rows"), where,
                               "read_sql runs a query (SELECT ...)")
            columns = [d[0] for d in cursor.description]
            first = 0
            while True:
                rows = cursor.fetchmany(ROWS_PER_FETCH)
                if not rows:
                    return
                yield rows_block(rows, columns, sql, first)
                first += len(rows)


def rows_block(rows: list, columns: list[str], sql: str, first: int = 0) -> pa.Table:
    """A block of fetched rows; a column whose values have no common type fails naming
    the column and the first row that does not fit.

    >>> rows_block([(1, "a"), (None, "b")], ["x", "s"], "q").to_pylist()
    [{'x': 1, 's': 'a'}, {'x': None, 's': 'b'}]
    >>> rows_block([(1,), ("a",)], ["x"], "SELECT x FROM t")
    Traceback (most recent call last):
    ...
    ValueError: read_sql: SQL 'SELECT x FROM t': column 'x' of row 1 holds 'a' (str), unlike the rows before it (int); CAST the column to one type in the query
    """
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise ValueError(f"read_sql: SQL {_short(sql)!r} returns column {dup!r} twice; give "
                         "the columns distinct names (AS ...)")
    arrays = {}
    for i, name in enumerate(columns):
        values = [row[i] for row in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValueError(_misfit(values, name, sql, first, exc)) from None
    return pa.table(arrays) if arrays else pa.table({})


def _misfit(values: list, name: str, sql: str, first: int, exc: BaseException) -> str:
    seen = next((v for v in values if v is not None), None)
    for index, value in enumerate(values):
        if value is None or seen is None:
            continue
        try:
            pa.array([seen, value])
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            return (f"read_sql: SQL {_short(sql)!r}: column {name!r} of row {first + index} "
                    f"holds {value!r} ({type(value).__name__}), unlike the rows before it "
                    f"({type(seen).__name__}); CAST the column to one type in the query")
    return (f"read_sql: SQL {_short(sql)!r}: column {name!r} (rows {first}-"
            f"{first + len(values) - 1}) has no Arrow type: {exc}; CAST it in the query")


class SQLSink(Datasink):
    """Runs ``sql`` (a parameterised INSERT, in the driver's parameter style) once per
    row, the row's values in column order, ``ROWS_PER_EXECUTEMANY`` rows per
    ``executemany``.

    Each write task runs in one transaction on its own connection, committed when the
    task's last row is sent: a task that fails is rolled back and leaves no row, so its
    retry inserts each row once. A task whose commit succeeded and which then died
    before reporting it (a worker killed in that instant) is rerun and inserts its rows
    again: without a ledger, writes are exactly-once per task except in that window
    (at-least-once there). With ``ledger_table`` (a table name; created if missing),
    each task also records ``<job>:<task key>`` in that table in the same transaction,
    and an attempt that finds its task recorded inserts nothing: exactly-once,
    including that window. The job's ledger rows are deleted when the write completes.
    When the job fails, tasks that committed stay committed (as in Ray Data).

    >>> import functools, sqlite3, tempfile
    >>> db = tempfile.mkdtemp() + "/a.db"
    >>> with sqlite3.connect(db) as c: _ = c.execute("CREATE TABLE t (x INTEGER)")
    >>> SQLSink("INSERT INTO t VALUES (?)", functools.partial(sqlite3.connect, db)).write(
    ...     [pa.table({"x": [1, 2, 3]})], None)
    3
    >>> sqlite3.connect(db).execute("SELECT SUM(x) FROM t").fetchone()
    (6,)
    """

    def __init__(self, sql: str, connection_factory: Callable[[], Any],
                 ledger_table: str | None = None, resume: bool = False,
                 job: str | None = None) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"write_sql: sql={sql!r}; expected a parameterised INSERT, e.g. "
                             "'INSERT INTO t VALUES (?, ?)' (sqlite3) or '... (%s, %s)' "
                             "(psycopg)")
        if not callable(connection_factory):
            raise TypeError(f"write_sql: connection_factory must be a function returning a "
                            f"DB-API 2 connection, got {type(connection_factory).__name__}")
        if ledger_table is not None and not _IDENTIFIER.match(str(ledger_table)):
            raise ValueError(f"write_sql: ledger_table={ledger_table!r}; expected a table name "
                             "(letters, digits, _ and at most one schema dot), e.g. "
                             "'streambatch_ledger'")
        if resume and ledger_table is None:
            raise ValueError("write_sql: resume=True needs ledger_table= (the ledger records "
                             "the tasks an interrupted run committed)")
        self.sql, self.connection_factory, self.resume = sql, connection_factory, resume
        self.ledger = ledger_table
        self.job = job if ledger_table is not None and job else uuid.uuid4().hex[:12]

    def on_write_start(self) -> None:
        """Create the ledger table when one is asked for (its own transaction); refuse to
        run again, without ``resume``, a job whose interrupted run left tasks in it."""
        if self.ledger:
            with connect(self.connection_factory, "write_sql") as cursor:
                _execute(cursor, f"CREATE TABLE IF NOT EXISTS {self.ledger} "
                         f"(task VARCHAR(255) PRIMARY KEY, num_rows INTEGER NOT NULL)",
                         "write_sql", "creating the ledger table")
                _execute(cursor, f"SELECT COUNT(*) FROM {self.ledger} WHERE task LIKE "
                         f"'{self.job}:%'", "write_sql", "reading the ledger")
                left = int(cursor.fetchall()[0][0])
            if left and not self.resume:
                raise ValueError(
                    f"write_sql: the ledger {self.ledger!r} holds {left} task(s) an interrupted "
                    f"run of this job committed; pass resume=True to insert only the rest, or "
                    f"delete the ledger's rows starting '{self.job}:' to insert every row again")

    def on_write_complete(self, write_result: Any) -> None:
        """Forget this job's tasks in the ledger: no attempt of them can run any more."""
        if self.ledger:
            with connect(self.connection_factory, "write_sql") as cursor:
                _execute(cursor, f"DELETE FROM {self.ledger} WHERE task LIKE "
                         f"'{self.job}:%'", "write_sql", "cleaning the ledger")

    def get_name(self) -> str:
        """``Write[SQL]``."""
        return "SQL"

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> int:
        """Insert every row of this partition in one transaction; return the row count."""
        task = getattr(ctx, "task_index", None)
        where = f"write task {task}" if task is not None else "write task"
        done = 0
        key = str(getattr(ctx, "key", "") or task)
        token = f"{self.job}:{hashlib.sha1(key.encode()).hexdigest()[:24]}"  # literal-safe
        with connect(self.connection_factory, "write_sql") as cursor:
            if self.ledger:
                _execute(cursor, f"SELECT num_rows FROM {self.ledger} WHERE task = '{token}'",
                         "write_sql", f"{where}, reading the ledger")
                found = cursor.fetchall()
                if found:  # an earlier attempt committed: its rows are in
                    return int(found[0][0])
            for block in blocks:
                for start in range(0, block.num_rows, ROWS_PER_EXECUTEMANY):
                    chunk = block.slice(start, ROWS_PER_EXECUTEMANY)
                    values = _row_tuples(chunk)
                    try:
                        cursor.executemany(self.sql, values)
                    except Exception as exc:
                        raise SQLError(
                            "write_sql", self.sql, exc,
                            f"{where}, rows {done}-{done + len(values) - 1} of its partition, "
                            f"columns {chunk.column_names}, first row {values[0]!r}",
                            "nothing of this task was committed; the statement takes each "
                            "row's values in column order, in the driver's parameter style "
                            "(? for sqlite3, %s for psycopg)") from exc
                    done += len(values)
            if self.ledger:
                _execute(cursor, f"INSERT INTO {self.ledger} (task, num_rows) VALUES "
                         f"('{token}', {done})", "write_sql", f"{where}, recording it in the "
                         "ledger")
        return done


def _row_tuples(table: pa.Table) -> list[tuple]:
    """The rows as tuples in column order (tensor columns as numpy arrays).

    >>> _row_tuples(pa.table({"a": [1, None], "b": [b"\\x00", b"x"]}))
    [(1, b'\\x00'), (None, b'x')]
    """
    from streambatch.connectors.tensors import is_tensor_type, tensor_to_numpy

    columns = []
    for field in table.schema:
        column = table.column(field.name)
        columns.append(list(tensor_to_numpy(column)) if is_tensor_type(field.type)
                       else column.to_pylist())
    return list(zip(*columns, strict=True)) if columns else [() for _ in range(table.num_rows)]
