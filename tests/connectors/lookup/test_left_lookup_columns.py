"""A left lookup adds the same columns to every row: a batch in which no key matches
gets them as nulls, never a row without them."""

from __future__ import annotations

from streambatch.connectors.lookup import DictTable

import streambatch as sb


def test_a_batch_with_no_match_still_gets_the_lookup_columns_as_nulls():
    users = DictTable({150: {"name": "ada", "age": 36}}, key="id")
    rows = (sb.range(200, override_num_blocks=4).lookup(users, on="id", how="left")
            .take_all())
    assert len(rows) == 200
    assert all(set(r) == {"id", "name", "age"} for r in rows), \
        [r for r in rows if set(r) != {"id", "name", "age"}][:2]
    by_id = {r["id"]: r for r in rows}
    assert by_id[150] == {"id": 150, "name": "ada", "age": 36}
    assert by_id[0] == {"id": 0, "name": None, "age": None}


def test_rows_that_hold_different_columns_add_the_union_of_them():
    table = DictTable({1: {"a": 1}, 2: {"b": "x"}}, key="id")
    rows = sorted(sb.range(4, override_num_blocks=1).lookup(table, on="id").take_all(),
                  key=lambda r: r["id"])
    assert rows == [{"id": 0, "a": None, "b": None}, {"id": 1, "a": 1, "b": None},
                    {"id": 2, "a": None, "b": "x"}, {"id": 3, "a": None, "b": None}]
