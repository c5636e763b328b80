"""The parquet sink keeps every value when a partition's blocks differ in schema."""

from __future__ import annotations

import pyarrow.parquet as pq

import streambatch as sb


def one_partition(rows):
    return sb.from_items(rows, override_num_blocks=1).map_batches(lambda b: b, batch_size=1, batch_format="pyarrow")


def test_a_column_null_in_the_first_block_is_written_with_its_later_values(tmp_path):
    out = tmp_path / "o"
    files = one_partition([{"x": None}, {"x": 1.5}, {"x": 2.5}]).write_parquet(str(out))
    assert sum(f["rows"] for f in files) == 3
    assert sorted(sb.read_parquet(str(out)).take_all(), key=lambda r: (r["x"] is not None, r["x"])) \
        == [{"x": None}, {"x": 1.5}, {"x": 2.5}]


def test_blocks_with_other_columns_or_order_keep_their_values(tmp_path):
    out = tmp_path / "o"
    rows = [{"a": 1, "b": "p"}, {"b": "q", "a": 2}, {"a": 3, "c": True}]
    one_partition(rows).write_parquet(str(out))
    got = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted((r["a"], r.get("b"), r.get("c")) for r in got) == \
        [(1, "p", None), (2, "q", None), (3, None, True)]


def test_a_struct_field_that_appears_after_the_first_block_is_written(tmp_path):
    """Arrow casts a struct to one of fewer fields by leaving the others out: the later
    blocks' ``extra`` was cast away to fit the file the first block opened (property run
    seed 96033, a worker killed: 3 rows of 118 lost a nested key)."""
    def nested(batch):  # each batch's struct type from its own rows
        return {"id": batch["id"], "s": [{"k": int(i), **({"extra": [int(i), int(i) + 1]}
                                                       if i % 2 else {})} for i in batch["id"]]}

    out = tmp_path / "o"
    sb.range(6, override_num_blocks=1).map_batches(nested, batch_size=1).write_parquet(str(out))
    got = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted((r["id"], r["s"]["k"], r["s"].get("extra")) for r in got) == \
        [(i, i, [i, i + 1] if i % 2 else None) for i in range(6)]


def test_partition_values_null_and_the_hive_null_marker_as_text_stay_apart(tmp_path):
    """A string equal to Hive's null marker went to the nulls' directory: the two groups
    wrote one file name there and the job failed (FileNotFoundError on a temp file), or
    the string came back as null."""
    marker = "__HIVE_DEFAULT_PARTITION__"
    rows = [{"id": i, "p": [None, marker, "", "a/b"][i % 4]} for i in range(12)]
    sb.from_items(rows, override_num_blocks=1).write_parquet(tmp_path / "o", partition_cols=["p"])
    back = sorted((r["id"], r["p"]) for r in sb.read_parquet(tmp_path / "o").take_all())
    assert back == [(r["id"], r["p"]) for r in rows]
