"""Rows to blocks (issue 14): every row-producing op builds its block through one
conversion (connectors/row_conversion.py): the union of keys, unified types, tensor
columns for arrays, and a clear error (or a dead letter under on_error="skip") for
what cannot be stored. Each engine test below failed on the code before it."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from streambatch.connectors.block_joins import block_to_rows, concat_blocks
from streambatch.connectors.row_conversion import (
    RowsToBlockError,
    columns_to_block,
    rows_to_block,
    values_to_array,
)
from streambatch.connectors.tensors import tensor_array, tensor_rows
from streambatch.executor.contract import RowConversionError

import streambatch as sb


@pytest.fixture(autouse=True, scope="module")
def _engine():
    sb.init(num_cpus=2)
    yield


def rows(ds) -> list[dict]:
    """The dataset's rows, tensor columns as numpy arrays."""
    return block_to_rows(ds.to_arrow())


def dead(ds) -> list[dict]:
    return ds.dead_letters().to_pylist()


# ------------------------------------------------------------------ union of keys


def test_map_keeps_a_key_the_first_row_lacks():
    ds = sb.range(4, override_num_blocks=1).map(
        lambda r: {"id": r["id"], **({"b": 1} if r["id"] else {})})
    assert ds.take_all() == [{"id": 0, "b": None}, {"id": 1, "b": 1}, {"id": 2, "b": 1},
                             {"id": 3, "b": 1}]


def test_flat_map_keeps_the_union_of_keys_in_first_seen_order():
    ds = sb.range(2, override_num_blocks=1).flat_map(
        lambda r: [{"x": r["id"]}, {"y": "a", "x": 5}] if r["id"] else [{"z": 1.5}])
    assert ds.take_all() == [{"z": 1.5, "x": None, "y": None}, {"z": None, "x": 1, "y": None},
                             {"z": None, "x": 5, "y": "a"}]


def test_from_items_unions_keys_and_unifies_types():
    items = [{"a": 1}, {"a": 2.5, "b": {"x": 1}}, {"b": {"y": "s"}}]
    assert sb.from_items(items, override_num_blocks=1).take_all() == [
        {"a": 1.0, "b": None}, {"a": 2.5, "b": {"x": 1, "y": None}},
        {"a": None, "b": {"x": None, "y": "s"}}]


def test_map_batches_list_of_rows_output_unions_keys():
    ds = sb.range(3, override_num_blocks=1).map_batches(
        lambda b: [{"k": i} if i else {"j": "a"} for i in b["id"].to_pylist()], batch_format="pyarrow")
    assert ds.take_all() == [{"j": "a", "k": None}, {"j": None, "k": 1}, {"j": None, "k": 2}]


def test_a_row_of_no_keys_is_still_a_row():
    assert sb.range(3, override_num_blocks=1).map(lambda r: {}).count() == 3


# ----------------------------------------------------------------------- errors


def test_int_and_str_in_one_key_is_an_error_naming_stage_partition_row_and_key():
    ds = sb.range(4, override_num_blocks=1).map(lambda r: {"a": "x" if r["id"] == 2 else r["id"]})
    with pytest.raises(RowConversionError) as info:
        ds.take_all()
    err = info.value
    assert (err.key, err.got) == ("a", "str")
    assert "Map(<lambda>)" in err.stage and "ids 0-3" in err.partition
    assert "row 2: {'id': 2}" in err.where
    assert "no common type with int64" in str(err) and 'on_error="skip"' in str(err)


def test_int_beyond_2_53_with_floats_is_an_error_not_a_rounding():
    big = 2**60 + 1
    with pytest.raises(RowConversionError, match="cannot be stored as double") as info:
        sb.from_items([0], override_num_blocks=1).flat_map(
            lambda r: [{"v": 0.5}, {"v": big}]).take_all()
    assert info.value.key == "v" and "its output 1" in info.value.where
    with pytest.raises(sb.UserCodeError, match="from_items: item 1, key 'v'"):
        sb.from_items([{"v": 0.5}, {"v": big}], override_num_blocks=1).take_all()


@pytest.mark.parametrize("values", [
    [1.5, True],  # Arrow's inference would store True as 1.0
    [dt.date(2020, 1, 1), dt.datetime(2020, 1, 1, 12, 30)],  # ... the datetime as a date
    [dt.date(2020, 1, 1), 3],  # ... the int as a date
    [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)],  # naive + aware
    [[1.5], [2.5, True]],  # the same inside a list
], ids=["float-bool", "date-datetime", "date-int", "naive-aware", "nested"])
def test_mixes_arrow_would_silently_change_are_errors(values):
    ds = sb.from_items([{"v": v} for v in values], override_num_blocks=1)
    with pytest.raises(sb.UserCodeError, match=r"from_items: item 1, key 'v(\[\])?'"):
        ds.take_all()


def test_float16_among_ints_becomes_a_float_not_a_truncated_int():
    got = sb.from_items([{"v": 1}, {"v": np.float16(1.5)}], override_num_blocks=1).take_all()
    assert got == [{"v": 1.0}, {"v": 1.5}]


def test_non_dict_map_output_names_the_row():
    with pytest.raises(sb.UDFReturnTypeError, match="returned list; expected one of: dict") as info:
        sb.range(3, override_num_blocks=1).map(lambda r: [r] if r["id"] == 1 else r).take_all()
    assert "row 1: {'id': 1}" in str(info.value)


def test_flat_map_returning_a_dict_names_the_row():
    with pytest.raises(RowConversionError, match="returned dict") as info:
        sb.range(2, override_num_blocks=1).flat_map(lambda r: r).take_all()
    assert "row 0" in info.value.where


def test_map_batches_wrong_column_lengths_names_the_batch_and_column():
    ds = sb.range(6, override_num_blocks=1).map_batches(
        lambda b: {"a": [1, 2], "b": [1]}, batch_size=3, batch_format="pyarrow")
    with pytest.raises(RowConversionError, match="column 'a' has 2") as info:
        ds.take_all()
    assert info.value.key == "b" and "batch of rows 0-2" in info.value.where


def test_unrepresentable_value_is_an_error_naming_its_type():
    class Opaque:
        pass

    with pytest.raises(RowConversionError, match="Arrow cannot hold") as info:
        sb.range(2, override_num_blocks=1).map(lambda r: {"o": Opaque()}).take_all()
    assert info.value.key == "o" and "Opaque" in info.value.got


# ----------------------------------------------------- on_error="skip" conversions


def test_skip_sends_non_dict_rows_to_the_dead_letters():
    ds = sb.range(10, override_num_blocks=1).map(lambda r: [r], on_error="skip")
    assert ds.take_all() == []
    letters = dead(ds)
    assert sorted(json.loads(d["row"])["id"] for d in letters) == list(range(10))
    assert all("returned list" in d["error"] and d["where"].startswith("row ") for d in letters)


def test_skip_dead_letters_only_the_rows_that_cannot_be_stored():
    ds = sb.range(6, override_num_blocks=1).map(
        lambda r: {"a": "x" if r["id"] % 3 == 2 else r["id"]}, on_error="skip")
    assert ds.take_all() == [{"a": 0}, {"a": 1}, {"a": 3}, {"a": 4}]
    letters = dead(ds)
    assert [d["where"] for d in letters] == ["row 2", "row 5"]
    assert all("key 'a'" in d["error"] for d in letters)


def test_skip_flat_map_dead_letters_the_input_row_with_all_its_outputs():
    ds = sb.range(3, override_num_blocks=1).flat_map(
        lambda r: [{"a": 1}, {"a": "x" if r["id"] == 1 else 2}], on_error="skip")
    assert ds.take_all() == [{"a": 1}, {"a": 2}, {"a": 1}, {"a": 2}]
    assert [json.loads(d["row"]) for d in dead(ds)] == [{"id": 1}]


@pytest.mark.parametrize("udf", [
    lambda b: {"a": [1, 2], "b": [1]},  # wrong lengths
    lambda b: {"a": [object()] * len(b)},  # a value Arrow cannot hold
    lambda b: 42,  # not a batch at all
], ids=["lengths", "value", "return-type"])
def test_skip_sends_a_batch_that_cannot_be_stored_to_the_dead_letters(udf):
    ds = sb.range(6, override_num_blocks=1).map_batches(udf, batch_size=3, on_error="skip", batch_format="pyarrow")
    assert ds.take_all() == []
    letters = dead(ds)
    assert sorted(json.loads(d["row"])["id"] for d in letters) == list(range(6))
    assert {d["where"] for d in letters} == {"batch of rows 0-2 of the partition",
                                             "batch of rows 3-5 of the partition"}


def test_skip_generator_batch_is_never_both_output_and_dead_letter():
    def gen(batch):
        yield {"id": batch["id"]}
        yield {"id": [1, "x", 2][: len(batch)]}  # int and str in one column

    ds = sb.range(3, override_num_blocks=1).map_batches(gen, batch_size=3, on_error="skip", batch_format="pyarrow")
    assert ds.take_all() == []
    assert len(dead(ds)) == 3


# ---------------------------------------------------------------------- tensors


def test_n_d_arrays_become_fixed_shape_tensor_columns():
    ds = sb.range(3, override_num_blocks=1).map(lambda r: {"img": np.full((2, 3), r["id"], np.uint8)})
    table = ds.to_arrow()
    assert table.schema.field("img").type.extension_name == "arrow.fixed_shape_tensor"
    got = block_to_rows(table)
    assert [r["img"].dtype for r in got] == [np.uint8] * 3
    assert [r["img"].tolist() for r in got] == [np.full((2, 3), i).tolist() for i in range(3)]


def test_arrays_of_different_shapes_become_a_variable_shape_tensor_column():
    ds = sb.range(3, override_num_blocks=1).map(lambda r: {"v": np.arange(r["id"] + 1.0)})
    table = ds.to_arrow()
    assert table.schema.field("v").type.extension_name == "arrow.variable_shape_tensor"
    assert [r["v"].tolist() for r in block_to_rows(table)] == [[0.0], [0.0, 1.0], [0.0, 1.0, 2.0]]


def test_torch_tensors_become_tensor_columns():
    torch = pytest.importorskip("torch")
    ds = sb.range(2, override_num_blocks=1).map(
        lambda r: {"t": torch.ones(2, 2) * r["id"], "s": torch.tensor(r["id"])})
    got = rows(ds)
    assert [r["t"].tolist() for r in got] == [[[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]
    assert [r["s"] for r in got] == [0, 1]


def test_row_udfs_see_tensor_columns_as_numpy_arrays():
    images = [{"img": np.arange(4.0).reshape(2, 2)}, {"img": np.ones((3, 1))}]
    ds = sb.from_items(images, override_num_blocks=1).map(
        lambda r: {"shape": list(r["img"].shape), "img": r["img"]})
    got = rows(ds)
    assert [r["shape"] for r in got] == [[2, 2], [3, 1]]
    assert [r["img"].tolist() for r in got] == [a["img"].tolist() for a in images]


def test_numpy_scalars_keep_their_arrow_types():
    ds = sb.range(2, override_num_blocks=1).map(
        lambda r: {"f": np.float32(r["id"]), "i": np.int16(r["id"]), "z": np.array(2.5)})
    schema = ds.to_arrow().schema
    assert [schema.field(n).type for n in "fiz"] == [pa.float32(), pa.int16(), pa.float64()]


def test_filter_passes_rows_on_unchanged_even_when_the_predicate_mutates_them():
    ds = sb.from_items([{"a": 1, "secret": "s1"}, {"a": 2, "secret": "s2"}], override_num_blocks=1)
    assert ds.filter(lambda r: r.pop("secret") is not None).take_all() == [
        {"a": 1, "secret": "s1"}, {"a": 2, "secret": "s2"}]


def test_from_numpy_of_a_list_of_arrays_with_rows_of_one_shape():
    ds = sb.from_numpy([np.zeros((2, 2)), np.ones((3, 2))], override_num_blocks=1)
    assert sorted(r["data"].tolist() for r in rows(ds)) == [[0.0, 0.0]] * 2 + [[1.0, 1.0]] * 3


def test_from_numpy_of_a_ragged_list_of_arrays():
    ds = sb.from_numpy([np.zeros((2, 2)), np.ones((3, 3))], override_num_blocks=1)
    assert sorted(r["data"].tolist() for r in rows(ds)) == [[0.0, 0.0]] * 2 + [[1.0, 1.0, 1.0]] * 3


# ------------------------------------------------------------- the conversion itself


def test_rows_to_block_fast_path_equals_from_pylist_for_plain_rows():
    plain = [{"i": i, "f": i / 2, "s": str(i), "b": i % 2 == 0, "l": [i], "d": {"k": i}}
             for i in range(50)]
    assert rows_to_block(plain).equals(pa.Table.from_pylist(plain))


@pytest.mark.parametrize("values, message", [
    ([1, "x"], "row 1, key 'c': got str: 'x' has no common type with int64"),
    ([True, 1], "row 1, key 'c': got int"),
    (["a", b"b"], "row 1, key 'c': got bytes"),
    ([{"x": 1}, {"x": "s"}], "row 1, key 'c.x'"),
    ([[1], ["s"]], "row 1, key 'c[]'"),
    ([2**64], "does not fit in 64 bits"),
    ([{1: "a"}], "row 0, key 'c'"),
    ([np.zeros(2), [1.0, 2.0]], "row 1, key 'c': got list: [1.0, 2.0] is not a numpy array"),
    ([np.zeros(2), np.zeros((2, 2))], "a tensor column needs the same number of dimensions"),
    ([np.array(["a", "b"])], "a tensor column holds int, uint or float"),
    ([np.zeros(2, bool)], "got numpy array of bool: a tensor column holds int, uint or float"),
    ([np.zeros(2), np.array([2**60, 1])], "cannot be stored exactly as float64"),
])
def test_values_that_cannot_be_stored_are_named(values, message):
    with pytest.raises(RowsToBlockError) as info:
        values_to_array(values, "c")
    assert message in str(info.value)


def test_all_problems_are_reported_by_row():
    with pytest.raises(RowsToBlockError) as info:
        rows_to_block([{"a": 1}, {"a": "x"}, 5, {"a": 2}, {"a": "y"}])
    assert [p.row for p in info.value.problems] == [2]  # not a dict: found before any typing
    with pytest.raises(RowsToBlockError) as info:
        rows_to_block([{"a": 1}, {"a": "x"}, {"a": 2}, {"a": "y"}])
    assert [(p.row, p.key) for p in info.value.problems] == [(1, "a"), (3, "a")]


def test_type_unification_follows_arrow_promotion():
    assert values_to_array([np.int8(1), np.int32(2)]).type == pa.int32()
    assert values_to_array([np.float32(1), 2]).type == pa.float64()
    assert values_to_array([[], [1], None, [2.5]]).type == pa.list_(pa.float64())
    assert values_to_array([{"a": 1}, {}, {"b": [1]}]).to_pylist() == [
        {"a": 1, "b": None}, {"a": None, "b": None}, {"a": None, "b": [1]}]
    assert values_to_array([{"a": np.zeros((2, 2))}]).to_pylist() == [{"a": [[0.0, 0.0], [0.0, 0.0]]}]


def test_tensor_columns_hold_nulls_and_unify_dtypes():
    column = values_to_array([np.zeros(2, np.int8), None, np.ones(2, np.float32)])
    assert column.type.extension_name == "arrow.fixed_shape_tensor"
    assert column.type.value_type == pa.float32() and column.null_count == 1
    got = tensor_rows(column)
    assert got[1] is None and got[2].tolist() == [1.0, 1.0]
    ragged = values_to_array([np.zeros((1, 2)), None, np.ones((2, 1))])
    assert [None if a is None else a.shape for a in tensor_rows(ragged)] == [(1, 2), None, (2, 1)]


def test_columns_to_block_takes_every_column_kind():
    pd = pytest.importorskip("pandas")
    block = columns_to_block({"l": [1, 2], "n": np.zeros((2, 2, 2)), "s": pd.Series(["a", "b"]),
                              "o": np.array([np.zeros(1), np.zeros(2)], dtype=object),
                              "a": pa.array([True, False])})
    assert block.num_rows == 2 and block.schema.names == ["l", "n", "s", "o", "a"]
    assert block.schema.field("o").type.extension_name == "arrow.variable_shape_tensor"


def test_concat_blocks_makes_tensors_of_differing_shapes_variable():
    a = rows_to_block([{"v": np.zeros((2, 2), np.float32)}])
    b = rows_to_block([{"v": np.ones((1, 3))}])
    joined = concat_blocks([a, b])
    assert [r["v"].shape for r in block_to_rows(joined)] == [(2, 2), (1, 3)]
    with pytest.raises(ValueError, match="column 'x' is int64 in block 0 and string in block 1"):
        concat_blocks([rows_to_block([{"x": 1}]), rows_to_block([{"x": "s"}])])


def test_tensor_array_keeps_fixed_shape_when_asked_for_variable():
    assert tensor_array([np.zeros(2)], variable=True).type.extension_name == "arrow.variable_shape_tensor"


def test_pandas_batches_keep_tensor_shapes_both_ways():
    pytest.importorskip("pandas")
    images = [{"img": np.arange(4.0).reshape(2, 2), "n": 1}, {"img": np.ones((2, 2)), "n": 2}]

    def shapes(frame):
        return frame.assign(shape=[str(a.shape) for a in frame["img"]])

    ds = sb.from_items(images, override_num_blocks=1).map_batches(shapes, batch_format="pandas")
    got = rows(ds)
    assert [r["shape"] for r in got] == ["(2, 2)", "(2, 2)"]
    assert [r["img"].tolist() for r in got] == [a["img"].tolist() for a in images]


def test_pandas_object_column_missing_values_are_nulls():
    pytest.importorskip("pandas")
    ds = sb.from_items([{"s": "a"}, {"s": "b"}], override_num_blocks=1).map_batches(
        lambda frame: frame.assign(t=[float("nan"), {"k": 1}]), batch_format="pandas")
    assert [r["t"] for r in ds.take_all()] == [None, {"k": 1}]
