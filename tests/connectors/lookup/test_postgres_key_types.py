"""PostgresTable refuses rows PostgreSQL matched only by casting the dataset's key
(the same check SQLiteTable makes), instead of leaving them unmatched."""

from __future__ import annotations

import pytest
from streambatch.connectors.lookup import FreshCache, PostgresTable

import streambatch as sb


@pytest.fixture
def prices(postgres_dsn):
    import psycopg
    conn = psycopg.connect(postgres_dsn, autocommit=True)
    conn.execute("DROP TABLE IF EXISTS prices CASCADE")
    conn.execute("CREATE TABLE prices (sku bigint PRIMARY KEY, price bigint)")
    conn.execute("INSERT INTO prices VALUES (1, 100), (2, 200)")
    yield conn
    conn.close()


@pytest.mark.parametrize("how", ["left", "inner"])
def test_a_key_postgres_matches_by_casting_fails_naming_the_types(postgres_dsn, prices, how):
    """PostgreSQL casts the dataset's '1' to the bigint key and returns the row keyed by 1;
    it was looked for under '1': every row came out unmatched (nulls, or dropped by an
    inner lookup). Now an error naming both types, as SQLiteTable raises."""
    ds = sb.from_items([{"sku": "1"}, {"sku": "2"}])
    table = PostgresTable(postgres_dsn, "prices", key="sku", feed=False)
    with pytest.raises(TypeError, match=r"key 'sku' holds [12] \(int\), which PostgreSQL matched "
                                        r"to the dataset's str key values"):
        ds.lookup(table, on="sku", how=how, cache=FreshCache(5.0)).take_all()


def test_the_cache_refuses_a_cast_match_and_serves_matching_keys(postgres_dsn, prices):
    cache = FreshCache(5.0).open(PostgresTable(postgres_dsn, "prices", key="sku"))
    with pytest.raises(TypeError, match="cast it with map_batches"):
        cache.get_many(["1", "2"])
    assert cache.get_many([1, 2, 3]) == {1: {"price": 100}, 2: {"price": 200}}
    cache.close()
    same = sb.from_items([{"sku": 2}, {"sku": 5}]).lookup(
        PostgresTable(postgres_dsn, "prices", key="sku"), on="sku", how="inner")
    assert same.take_all() == [{"sku": 2, "price": 200}]
