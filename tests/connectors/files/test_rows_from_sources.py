"""Sources that build blocks from Python rows use the one conversion (issue 14
follow-ups; connectors/row_conversion.rows_to_block): JSON arrays, from_torch /
from_huggingface iterables, from_items. A row that cannot be stored fails naming
the file or the item's index in the whole collection (not its row in a read task).
Each test failed on the code before it, except where marked."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from streambatch.connectors.datasource import Piece, PieceSet, Pushdowns
from streambatch.connectors.file_based import FileReadError
from streambatch.connectors.memory import ItemsSource

import streambatch as sb


def _cause(error: BaseException, kind: type) -> BaseException:
    """``error`` or the first exception of type ``kind`` in its cause chain."""
    seen = error
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    assert seen is not None, f"no {kind.__name__} behind {error!r}"
    return seen


def _json(tmp_path, name: str, value) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return str(path)


# ------------------------------------------------------------------- JSON arrays


def test_json_array_rows_keep_the_union_of_keys(tmp_path):
    _json(tmp_path, "a.json", [{"a": 1}, {"a": 2, "b": "x"}, {"c": [1, 2]}])
    assert sb.read_json(str(tmp_path)).take_all() == [
        {"a": 1, "b": None, "c": None}, {"a": 2, "b": "x", "c": None},
        {"a": None, "b": None, "c": [1, 2]}]


def test_json_array_struct_fields_are_unified(tmp_path):  # a guard: from_pylist did this too
    _json(tmp_path, "a.json", [{"s": {"p": 1}}, {"s": {"q": "x"}}])
    assert [r["s"] for r in sb.read_json(str(tmp_path)).take_all()] == [
        {"p": 1, "q": None}, {"p": None, "q": "x"}]


def test_json_array_int_beyond_2_53_among_floats_is_an_error_not_a_rounding(tmp_path):
    path = _json(tmp_path, "a.json", [{"x": 0.5}, {"x": 2**53 + 1}])
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        sb.read_json(path).take_all()
    error = _cause(info.value, FileReadError)
    assert path in str(error) and "row 1, key 'x'" in str(error)
    assert "objects of the JSON array" in str(error)


def test_json_array_type_conflict_names_file_object_and_key(tmp_path):
    path = _json(tmp_path, "a.json", [{"a": 1}, {"a": 2}, {"a": "x"}])
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        sb.read_json(path).take_all()
    text = str(_cause(info.value, FileReadError))
    assert path in text and "row 2, key 'a': got str" in text and "int64" in text


def test_json_array_of_non_objects_names_the_item(tmp_path):
    path = _json(tmp_path, "a.json", [{"a": 1}, 3])
    with pytest.raises(Exception, match="item 1 is a int"):  # noqa: PT011
        sb.read_json(path).take_all()


def test_json_lines_are_read_as_before(tmp_path):  # regression guard: pyarrow's reader
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n{"a": 2, "b": "x"}\n')
    assert sb.read_json(str(tmp_path)).take_all() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


# ------------------------------------------------------------------- from_items


def test_from_items_conversion_error_names_the_items_index_in_the_list():
    items = [{"a": 1}] * 10 + [{"a": "x"}] + [{"a": 2}] * 5
    with pytest.raises(sb.UserCodeError) as info:
        sb.from_items(items, override_num_blocks=4).take_all()
    text = str(info.value)
    assert "from_items: item 10, key 'a': got str" in text
    assert "the type of this key in item 8" in text  # the detail's row is global too
    assert "row 2" not in text


def test_from_items_index_across_the_spans_of_a_resumed_read():
    """A resumed read task reads spans with gaps (here items 0-1 and 4-9)."""
    items = [{"a": i} for i in range(10)]
    items[6] = {"a": "six"}
    done = Pushdowns(done=PieceSet([Piece("items", 2, 4)]))
    tasks = ItemsSource(items).read_tasks(1, done)
    assert [p for t in tasks for p in t.pieces] == [Piece("items", 0, 2), Piece("items", 4, 10)]
    with pytest.raises(ValueError) as info:  # noqa: PT011 - memory.ItemsToBlockError
        list(tasks[0]())
    assert [p.row for p in info.value.problems] == [6]
    assert str(info.value).startswith("from_items: item 6, key 'a': got str")


def test_from_items_tensor_dimension_error_names_both_items():
    items = [{"v": np.zeros(2)}] * 9 + [{"v": np.zeros((2, 2))}]
    with pytest.raises(sb.UserCodeError) as info:
        sb.from_items(items, override_num_blocks=3).take_all()
    assert "item 9, key 'v'" in str(info.value) and "item 7 holds an array" in str(info.value)


# ------------------------------------------------------------------- from_torch


def test_from_torch_conversion_error_names_the_dataset_index():
    class Items:  # map-style: len and [i]; read in blocks of 1024 items
        def __len__(self):
            return 1500

        def __getitem__(self, i):
            return {"x": "bad" if i == 1300 else i}

    with pytest.raises(sb.UserCodeError) as info:
        sb.from_torch(Items(), override_num_blocks=1).take_all()
    assert "from_torch: item 1300, key 'x': got str" in str(info.value)
    assert "item 1024" in str(info.value)  # first item of the block that set the type


def test_from_huggingface_iterable_error_names_the_index():
    rows = iter([{"t": i} for i in range(1030)] + [{"t": [1]}])
    with pytest.raises(sb.UserCodeError, match="item 1030, key 't'"):
        sb.from_huggingface(rows).take_all()


def test_from_torch_tensors_images_and_scalars_convert_as_before():  # mostly a guard
    torch = pytest.importorskip("torch")
    image = pytest.importorskip("PIL.Image")

    class Items:
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"t": torch.full((2, 2), float(i)), "s": torch.tensor(i), "f": np.float32(i),
                    "img": image.new("RGB", (4, 3), (i, 0, 0)), "k": f"k{i}"}

    ds = sb.from_torch(Items(), override_num_blocks=1)
    schema = ds.to_arrow().schema
    assert schema.field("t").type.extension_name == "arrow.fixed_shape_tensor"
    assert schema.field("s").type == pa.int64() and schema.field("f").type == pa.float64()
    assert schema.field("img").type.extension_name == "arrow.fixed_shape_tensor"
    rows = ds.take_all()
    assert [r["t"].tolist() for r in rows] == [[[i, i], [i, i]] for i in (0.0, 1.0, 2.0)]
    assert [r["img"].shape for r in rows] == [(3, 4, 3)] * 3
    assert [int(r["img"][0, 0, 0]) for r in rows] == [0, 1, 2]
    assert [(r["s"], r["f"], r["k"]) for r in rows] == [(0, 0.0, "k0"), (1, 1.0, "k1"), (2, 2.0, "k2")]


def test_from_torch_bfloat16_tensor_names_item_key_and_what_to_do():
    torch = pytest.importorskip("torch")
    items = [{"n": 0}, {"n": 1, "t": torch.zeros(2, dtype=torch.bfloat16)}]
    with pytest.raises(sb.UserCodeError) as info:
        sb.from_torch(items, override_num_blocks=1).take_all()
    assert "item 1, key 't'" in str(info.value) and "t.float()" in str(info.value)


def test_from_torch_ragged_and_missing_arrays_are_tensor_columns():
    items = [{"v": np.arange(1.0)}, {"v": np.arange(3.0)}, {"v": None}]
    ds = sb.from_torch(items, override_num_blocks=1)
    assert ds.to_arrow().schema.field("v").type.extension_name == "arrow.variable_shape_tensor"
    assert [None if r["v"] is None else r["v"].tolist() for r in ds.take_all()] == [
        [0.0], [0.0, 1.0, 2.0], None]
