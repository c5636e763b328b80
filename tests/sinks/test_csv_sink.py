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


def test_text_that_pyarrow_would_take_for_null_stays_text(tmp_path):
    """Only an unquoted empty field is null: "NA" (Namibia), "null", "NaN", "N/A" in a
    text column came back None (pyarrow's null markers applied to strings)."""
    path = tmp_path / "c.csv"
    path.write_text('country,code,n\nNamibia,NA,1\nFrance,FR,\nx,null,3\ny,NaN,4\nz,N/A,5\nw,"",6\n')
    rows = sb.read_csv(str(path)).take_all()
    assert [r["code"] for r in rows] == ["NA", "FR", "null", "NaN", "N/A", ""]
    assert [r["n"] for r in rows] == [1, None, 3, 4, 5, 6]
    written = tmp_path / "out"
    sb.from_items([{"i": 0, "s": "NA"}, {"i": 1, "s": None}, {"i": 2, "s": ""}]).write_csv(
        str(written))
    back = sorted(sb.read_csv(str(written)).take_all(), key=lambda r: r["i"])
    assert [r["s"] for r in back] == ["NA", None, ""]


def test_a_one_column_file_keeps_its_null_rows(tmp_path):
    """One column writes a null as an empty line, which the reader skipped as blank: the
    round trip lost those rows. In a file of one column an empty line is a null row;
    a file of several columns still skips blank lines."""
    rows = [{"s": "a"}, {"s": None}, {"s": ""}, {"s": None}]
    sb.from_items(rows, override_num_blocks=1).write_csv(str(tmp_path / "o"))
    back = sb.read_csv(str(tmp_path / "o")).take_all()
    assert sorted(back, key=str) == sorted(rows, key=str)
    (tmp_path / "two.csv").write_text("a,b\n1,2\n\n3,4\n")
    assert sb.read_csv(str(tmp_path / "two.csv")).take_all() == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_a_header_naming_a_column_twice_fails_naming_it(tmp_path):
    """pyarrow reads both columns 'u'; one was then dropped silently (or, with a float
    column, the read failed with "Field 'u' exists 2 times")."""
    (tmp_path / "a.csv").write_text("u,u\n1.5,2\n")
    with pytest.raises(Exception, match=r"names the column 'u' twice in its header"):
        sb.read_csv(str(tmp_path)).take_all()
    import pyarrow.csv as pacsv

    named = sb.read_csv(str(tmp_path), read_options=pacsv.ReadOptions(
        column_names=["u", "v"], skip_rows=1)).take_all()
    assert named == [{"u": 1.5, "v": 2}]
