"""write_csv keeps every value when a partition's blocks differ in types or column order
(one header per file), and names the columns when they differ in their set."""

from __future__ import annotations

import pytest

import streambatch as sb


def batches_of(make):
    return sb.range(3, override_num_blocks=1).map_batches(make, batch_size=1)


def test_a_column_null_in_the_first_block_keeps_its_later_values(tmp_path):
    def text_later(batch):  # the first block's x is all nulls: Arrow's null type
        return {"id": batch["id"], "x": [None] if batch["id"][0] == 0 else [f"v{batch['id'][0]}"]}

    batches_of(text_later).write_csv(str(tmp_path / "o"))
    rows = sorted(sb.read_csv(str(tmp_path / "o")).take_all(), key=lambda r: r["id"])
    assert rows == [{"id": 0, "x": None}, {"id": 1, "x": "v1"}, {"id": 2, "x": "v2"}]


def test_blocks_with_the_columns_in_another_order_keep_their_values(tmp_path):
    def reorder(batch):
        i = int(batch["id"][0])
        return {"a": [i], "b": [i * 10]} if i % 2 else {"b": [i * 10], "a": [i]}

    batches_of(reorder).write_csv(str(tmp_path / "o"))
    rows = sorted(sb.read_csv(str(tmp_path / "o")).take_all(), key=lambda r: r["a"])
    assert rows == [{"a": i, "b": i * 10} for i in range(3)]


def test_blocks_with_other_columns_fail_naming_them(tmp_path):
    def new_column(batch):
        i = int(batch["id"][0])
        return {"a": [i]} if i == 0 else {"a": [i], "c": [i]}

    with pytest.raises(Exception, match=r"columns \['a', 'c'\] where the file's header has \['a'\]"):
        batches_of(new_column).write_csv(str(tmp_path / "o"))
