"""Lookup tables and the fresh cache behind ``Dataset.lookup``.

``SQLiteTable`` is built in; ``RedisTable`` and ``PostgresTable`` import their
client libraries (redis, psycopg) only when connected.

>>> from streambatch.connectors.lookup import FreshCache, SQLiteTable
>>> FreshCache(max_staleness=1.0).policy
'adaptive'
"""

from streambatch.connectors.lookup.cache import FreshCache, should_invalidate
from streambatch.connectors.lookup.postgres_table import PostgresTable
from streambatch.connectors.lookup.redis_table import RedisTable
from streambatch.connectors.lookup.sqlite_table import SQLiteTable
from streambatch.connectors.lookup.tables import (
    Change,
    DictTable,
    FeedPoll,
    Fetched,
    Horizon,
    LookupTable,
    TableClient,
)

__all__ = ["Change", "DictTable", "FeedPoll", "Fetched", "FreshCache", "Horizon", "LookupTable",
           "PostgresTable", "RedisTable", "SQLiteTable", "TableClient", "should_invalidate"]
