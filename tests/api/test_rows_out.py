"""Rows out of a dataset (issue 14 follow-ups): take_all / take / iter_rows give a
tensor column's value as one n-d numpy array per row (as Ray Data does), rows of
no columns count everywhere, and every place that joins blocks (to_arrow, batches
spanning blocks, repartition, the training loader, streaming_split's last round, a
task's coalesced outputs) unifies them through block_joins.concat_blocks:
tensor shapes that differ between blocks become one variable-shape column, and
types with nothing in common are a ValueError naming the column, both types and
where. Each test failed on the code before it (``pa.Table.to_pylist`` flattened
tensors; ``pa.concat_tables`` raised ``ArrowTypeError: Unable to merge`` and
dropped the rows of blocks with no columns), except where marked."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from streambatch.connectors.tensors import is_tensor_type, tensor_array, tensor_rows

import streambatch as sb

RAGGED = [np.zeros((2, 2)), np.ones((3, 3))]  # from_numpy: 2 rows of shape (2,), 3 of (3,)


def _mixed_types() -> sb.Dataset:
    """ids 0-1 (read partition 0) hold ints in 'a', ids 2-3 (read partition 1) strings."""
    return sb.range(4, override_num_blocks=2).map(
        lambda r: {"id": r["id"], "a": r["id"] if r["id"] < 2 else str(r["id"])})


# ------------------------------------------------------------- rows as n-d arrays


def test_take_all_gives_fixed_shape_tensor_rows_as_nd_arrays():
    images = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    rows = sb.from_numpy(images, override_num_blocks=1).take_all()
    assert [type(r["data"]) for r in rows] == [np.ndarray] * 3
    assert [r["data"].shape for r in rows] == [(2, 4)] * 3
    assert [r["data"].dtype for r in rows] == [np.float32] * 3
    assert [r["data"].tolist() for r in rows] == images.tolist()


def test_take_all_gives_variable_shape_tensor_rows_as_arrays_of_their_shape():
    items = [{"v": np.arange(2.0).reshape(1, 2), "n": 0}, {"v": np.arange(2.0).reshape(2, 1), "n": 1}]
    rows = sb.from_items(items, override_num_blocks=1).take_all()
    assert [r["n"] for r in rows] == [0, 1]
    assert [r["v"].shape for r in rows] == [(1, 2), (2, 1)]
    assert [r["v"].tolist() for r in rows] == [[[0.0, 1.0]], [[0.0], [1.0]]]


def test_iter_rows_and_take_give_nd_arrays_too(ordered):
    images = np.arange(16).reshape(4, 2, 2)
    ds = sb.from_numpy(images, override_num_blocks=2)
    assert [r["data"].tolist() for r in ds.iter_rows()] == images.tolist()
    taken = ds.take(3)
    assert [r["data"].shape for r in taken] == [(2, 2)] * 3
    assert [r["data"].tolist() for r in taken] == images[:3].tolist()


def test_rows_without_tensors_are_plain_python_values():  # unchanged: a regression guard
    rows = sb.from_items([{"a": 1, "s": "x", "l": [1, 2]}], override_num_blocks=1).take_all()
    assert rows == [{"a": 1, "s": "x", "l": [1, 2]}]


# ------------------------------------------------------------- rows of no columns


def test_rows_of_no_columns_count_in_every_consumer():
    ds = sb.range(3, override_num_blocks=1).map(lambda r: {})
    assert ds.count() == 3
    assert ds.to_arrow().num_rows == 3 and ds.to_arrow().num_columns == 0
    assert ds.take_all() == [{}, {}, {}]
    assert list(ds.iter_rows()) == [{}, {}, {}]
    assert ds.take(2) == [{}, {}]


def test_rows_of_no_columns_survive_joins_across_blocks():
    ds = sb.range(1000, override_num_blocks=2).map(lambda r: {})
    assert ds.count() == 1000
    assert ds.to_arrow().num_rows == 1000
    assert sum(b.num_rows for b in ds.iter_batches(batch_size=7, batch_format="pyarrow")) == 1000  # batches span blocks
    assert ds.repartition(3).count() == 1000
    # a task's many small outputs are coalesced (stage.split_blocks)
    assert ds.map_batches(lambda b: b, batch_size=10, batch_format="pyarrow").to_arrow().num_rows == 1000


# ------------------------------------------------------------- tensors across blocks


def test_to_arrow_and_take_all_of_a_ragged_list_of_arrays():
    ds = sb.from_numpy(RAGGED, override_num_blocks=1)
    table = ds.to_arrow()
    assert table.schema.field("data").type.extension_name == "arrow.variable_shape_tensor"
    assert sorted(r.tolist() for r in tensor_rows(table["data"])) == \
        [[0.0, 0.0]] * 2 + [[1.0, 1.0, 1.0]] * 3
    assert sorted(r["data"].tolist() for r in ds.take_all()) == [[0.0, 0.0]] * 2 + [[1.0, 1.0, 1.0]] * 3
    assert sorted(a.shape for a in ds.to_numpy("data")) == [(2,), (2,), (3,), (3,), (3,)]


def test_batches_spanning_blocks_of_different_tensor_shapes(ordered):
    batches = list(sb.from_numpy(RAGGED, override_num_blocks=1).iter_batches(batch_size=3, batch_format="pyarrow"))
    assert [b.num_rows for b in batches] == [3, 2]
    assert batches[0].schema.field("data").type.extension_name == "arrow.variable_shape_tensor"
    assert [r.tolist() for r in tensor_rows(batches[0]["data"])] == [[0, 0], [0, 0], [1, 1, 1]]


def test_repartition_of_blocks_of_different_tensor_shapes():
    ds = sb.from_numpy(RAGGED, override_num_blocks=1).repartition(1)
    assert ds.count() == 5
    assert sorted(r["data"].shape for r in ds.take_all()) == [(2,), (2,), (3,), (3,), (3,)]


def test_a_task_coalescing_outputs_of_different_tensor_shapes():
    # one task, batches of 2 rows whose tensors are 2, 3, then 4 wide: the first output
    # block goes out at once, the next two are coalesced into one (stage.split_blocks)
    ds = sb.range(6, override_num_blocks=1).map_batches(
        lambda b: {"v": np.full((len(b["id"]), 2 + int(b["id"][0]) // 2), b["id"][:, None])},
        batch_size=2, batch_format="numpy")
    blocks = [p.get() for p in ds._partitions()]
    assert [b.num_rows for b in blocks] == [2, 4]
    assert blocks[1].schema.field("v").type.extension_name == "arrow.variable_shape_tensor"
    rows = sorted(r["v"].tolist() for r in ds.take_all())
    assert rows == [[0, 0], [1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4, 4], [5, 5, 5, 5]]


def test_loader_and_split_joins_unify_tensor_shapes():
    from streambatch.loader.batches import batches
    from streambatch.loader.shuffle import pack_ids
    from streambatch.loader.split import final_round

    a = pa.table({"v": tensor_array(np.zeros((2, 2)))})
    b = pa.table({"v": tensor_array(np.ones((2, 3)))})
    out = list(batches(iter([(a, pack_ids(0, 0, 2)), (b, pack_ids(1, 0, 2))]), 3))
    assert [t.num_rows for t, _ in out] == [3, 1]
    assert [r.shape for r in tensor_rows(out[0][0]["v"])] == [(2,), (2,), (3,)]
    assert out[0][1].tolist() == np.concatenate([pack_ids(0, 0, 2), pack_ids(1, 0, 1)]).tolist()
    cut = final_round([], [a, b], 2, drop_last=False)
    assert [t.num_rows for t in cut] == [2, 2]
    assert [r.shape for t in cut for r in tensor_rows(t["v"])] == [(2,), (2,), (3,), (3,)]


# ------------------------------------------------------------- types with nothing in common


def test_take_all_keeps_each_blocks_values_as_they_are():
    rows = sorted(_mixed_types().take_all(), key=lambda r: r["id"])
    assert [r["a"] for r in rows] == [0, 1, "2", "3"]


def test_to_arrow_of_int_and_str_blocks_names_column_types_and_partitions():
    with pytest.raises(ValueError, match="Dataset.to_arrow") as info:
        _mixed_types().to_arrow()
    text = str(info.value)
    assert "column 'a'" in text and "int64" in text and "string" in text
    assert "(ids 0-1)" in text and "(ids 2-3)" in text
    assert "make the key hold one type" in text
    assert not isinstance(info.value, pa.ArrowException)


def test_a_batch_spanning_int_and_str_blocks_names_the_column(ordered):
    with pytest.raises(ValueError, match="a batch spans blocks that cannot be joined") as info:
        list(_mixed_types().iter_batches(batch_size=4, batch_format="pyarrow"))
    assert "column 'a' is int64 in block 0 and string in block 1" in str(info.value)


def test_repartition_of_int_and_str_blocks_names_the_stage_and_column():
    with pytest.raises(ValueError, match=r"stage 'Repartition\[1\]'") as info:
        _mixed_types().repartition(1).count()
    assert "column 'a' is int64" in str(info.value) and "string" in str(info.value)


# ------------------------------------------------------------- the public errors


def test_every_user_facing_error_of_the_engine_is_exported():
    from streambatch.executor import contract, errors

    for module, name in ((contract, "RowConversionError"), (errors, "NonDeterministicError"),
                         (errors, "BlockLostError"), (errors, "UserCodeError"),
                         (contract, "UDFReturnTypeError")):
        assert getattr(sb, name) is getattr(module, name) and name in sb.__all__
    assert issubclass(sb.RowConversionError, sb.UDFReturnTypeError)
    from streambatch.connectors.manifest import ResumeMismatchError

    assert sb.ResumeMismatchError is ResumeMismatchError and "ResumeMismatchError" in sb.__all__


def test_a_map_conversion_error_is_caught_as_sb_row_conversion_error():
    with pytest.raises(sb.RowConversionError) as info:
        sb.range(2, override_num_blocks=1).map(lambda r: {"a": 1 if r["id"] else "x"}).take_all()
    assert info.value.key == "a"


def test_to_arrow_of_a_fixed_shape_and_a_variable_shape_block():
    fixed = pa.table({"v": tensor_array(np.zeros((2, 2)))})
    variable = pa.table({"v": tensor_array([np.zeros(3), np.zeros(4)])})
    ds = sb.from_arrow([fixed, variable])
    assert sorted(r["v"].shape for r in ds.take_all()) == [(2,), (2,), (3,), (4,)]
    table = ds.to_arrow()
    assert is_tensor_type(table.schema.field("v").type)
    assert sorted(r.shape for r in tensor_rows(table["v"])) == [(2,), (2,), (3,), (4,)]


@pytest.mark.parametrize("batch_format", ["numpy", "pandas"])
def test_a_list_of_structs_passes_through_a_numpy_or_pandas_batch_function(batch_format):
    rows = [{"l": [{"x": 1}, {"x": 2}]}, {"l": []}, {"l": None}]
    ds = sb.from_items(rows, override_num_blocks=1).map_batches(lambda b: b,
                                                                batch_format=batch_format)
    assert ds.take_all() == rows


def test_a_variable_shape_tensor_column_with_null_rows_reads_back():
    """A block where the column was all null, joined to tensor blocks: Arrow makes null
    rows whose child slots are missing (their shapes were read shifted)."""
    rows = [{"t": None}, {"t": None}, {"t": np.zeros((1, 2))}, {"t": np.ones((2, 1))}]
    options = sb.DataContext.get_current().execution_options
    options.preserve_order = True  # the all-null block first
    try:
        [batch] = sb.from_items(rows, override_num_blocks=2).iter_batches(
            batch_size=4, batch_format="numpy")
    finally:
        options.preserve_order = False
    assert [None if v is None else v.shape for v in batch["t"]] == [None, None, (1, 2), (2, 1)]


def test_a_fixed_shape_block_of_null_rows_joins_a_variable_shape_block():
    fixed_nulls = pa.table({"t": pa.nulls(2, pa.table({"t": tensor_array(np.zeros((1, 2)))})
                                          .schema.field("t").type)})
    variable = pa.table({"t": tensor_array([np.zeros(1), np.zeros(3)])})
    joined = sb.from_arrow([variable, fixed_nulls], override_num_blocks=2).repartition(1)
    shapes = sorted(str(None if r["t"] is None else r["t"].shape) for r in joined.take_all())
    assert shapes == ["(1,)", "(3,)", "None", "None"]


def test_empty_lists_join_blocks_of_1d_tensors():
    """One block's key held numpy arrays (a 1-d tensor column), another's only empty or
    null lists (list<null>): the join makes both rows of numbers (was 'Unable to merge')."""
    arrays = pa.table({"v": tensor_array([np.zeros(1), np.ones(3)])})
    empties = pa.table({"v": pa.array([[], None], pa.list_(pa.null()))})
    numbers = pa.table({"v": pa.array([[4, 5]], pa.list_(pa.int64()))})
    ds = sb.from_arrow([arrays, empties, numbers], override_num_blocks=3).repartition(1)
    got = sorted((None if r["v"] is None else list(r["v"])) or [] for r in ds.take_all())
    assert got == [[], [], [0.0], [1.0, 1.0, 1.0], [4.0, 5.0]]


def test_a_categorical_column_beside_plain_strings_joins_as_strings():
    """A dictionary-encoded block (from a pandas categorical) beside a plain string block:
    to_arrow, to_pandas and batches spanning both failed ("no common type")."""
    cat = pa.table({"s": pa.array(["x", "y"]).dictionary_encode(), "i": [0, 1]})
    plain = pa.table({"s": pa.array(["z", None]), "i": [2, 3]})
    ds = sb.from_arrow([cat, plain])
    table = ds.to_arrow()
    assert table.schema.field("s").type == pa.string()
    assert table.sort_by("i")["s"].to_pylist() == ["x", "y", "z", None]
    assert ds.to_pandas().sort_values("i")["s"].tolist()[:3] == ["x", "y", "z"]
    batches = list(ds.iter_batches(batch_size=4, batch_format="pyarrow"))
    assert sorted(batches[0]["i"].to_pylist()) == [0, 1, 2, 3]
