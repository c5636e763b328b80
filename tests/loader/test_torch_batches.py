"""iter_torch_batches: dtypes, shapes, zero-copy conversion, collate_fn, devices, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import streambatch as sb
from streambatch.loader.torch_batches import TorchConverter, to_tensors

from .conftest import ids_of, image_table


def test_dtypes_and_shapes_of_tensor_batches(images):
    batches = list(images.iter_torch_batches(batch_size=64, device="cpu"))
    assert [tuple(b["img"].shape) for b in batches] == [(64, 3, 4, 4)] * 15 + [(40, 3, 4, 4)]
    first = batches[0]
    assert first["id"].dtype == torch.int64 and tuple(first["id"].shape) == (64,)
    assert first["label"].dtype == torch.float32
    assert first["img"].dtype == torch.uint8
    # the tensor column holds each row's own pixels
    for b in batches:
        assert torch.equal(b["img"][:, 0, 0, 0], (b["id"] % 251).to(torch.uint8))
        assert torch.equal(b["label"], (b["id"] * 0.5).to(torch.float32))


def test_dtypes_per_column_and_for_all_columns(images):
    b = next(iter(images.iter_torch_batches(batch_size=8, dtypes={"img": torch.float32},
                                            device="cpu")))
    assert (b["img"].dtype, b["id"].dtype) == (torch.float32, torch.int64)
    b = next(iter(images.iter_torch_batches(batch_size=8, dtypes=torch.float64, device="cpu")))
    assert {t.dtype for t in b.values()} == {torch.float64}


def test_unknown_column_in_dtypes_is_named(images):
    with pytest.raises(KeyError, match="nope"):
        next(iter(images.iter_torch_batches(batch_size=8, dtypes={"nope": torch.float32})))


def test_drop_last_drops_only_the_short_batch(images):
    batches = list(images.iter_torch_batches(batch_size=64, drop_last=True, device="cpu"))
    assert [len(b["id"]) for b in batches] == [64] * 15


def test_tensors_own_their_memory_and_leave_the_block_as_it_was():
    """(They shared the Arrow buffers, which torch writes despite their read-only flag.)"""
    table = image_table(16)
    before = table.column("img").chunk(0).storage.values.to_numpy().copy()
    tensors = to_tensors(table)
    assert tensors["id"].data_ptr() != table.column("id").chunk(0).buffers()[1].address
    tensors["img"].add_(1)
    tensors["id"].add_(1)
    assert (table.column("img").chunk(0).storage.values.to_numpy() == before).all()
    assert table.column("id").to_pylist() == list(range(16))


def test_non_numeric_columns_stay_lists_and_nulls_are_refused():
    out = to_tensors(pa.table({"s": ["a", "b"], "x": [1, 2]}))
    assert out["s"] == ["a", "b"] and out["x"].tolist() == [1, 2]
    out = to_tensors(pa.table({"s": ["a", None], "n": pa.nulls(2)}))  # (a null string
    assert out["s"] == ["a", None] and out["n"] == [None, None]  # was refused)
    with pytest.raises(ValueError, match="column 'x' has 1 null"):
        to_tensors(pa.table({"x": pa.array([1, None])}))


def test_collate_fn_receives_numpy_and_its_result_is_passed_on(images):
    def collate(batch):
        assert isinstance(batch["img"], np.ndarray) and batch["img"].shape[1:] == (3, 4, 4)
        return torch.as_tensor(batch["img"], dtype=torch.float32) / 255, \
            torch.as_tensor(batch["label"])

    x, y = next(iter(images.iter_torch_batches(batch_size=5, collate_fn=collate, device="cpu")))
    assert tuple(x.shape) == (5, 3, 4, 4) and x.dtype == torch.float32 and tuple(y.shape) == (5,)


def test_cpu_device_does_not_pin_and_cuda_path_would():
    cpu = TorchConverter(device="cpu")
    assert (str(cpu.device), cpu.pin) == ("cpu", False)
    cuda = TorchConverter(device="cuda")  # only inspected: no GPU here
    assert (cuda.device.type, cuda.pin) == ("cuda", True)
    assert TorchConverter(device="cuda", pin_memory=False).pin is False


def test_every_epoch_reruns_the_plan(images):
    it = images.iter_torch_batches(batch_size=100, device="cpu")
    first, second = sorted(ids_of(it)), sorted(ids_of(it))
    assert first == second == list(range(1000))


def test_materialized_dataset_is_read_from_memory_each_epoch(images):
    m = images.map_batches(lambda b: b, batch_format="pyarrow").materialize()
    it = m.iter_torch_batches(batch_size=128, device="cpu")
    assert sorted(ids_of(it)) == sorted(ids_of(it)) == list(range(1000))


def test_invalid_arguments_are_refused(images):
    with pytest.raises(ValueError, match="batch_size"):
        images.iter_torch_batches(batch_size=0)
    with pytest.raises(ValueError, match="local_shuffle_buffer_size"):
        images.iter_torch_batches(local_shuffle_buffer_size=-1)
    with pytest.raises(ValueError, match="needs local_shuffle_buffer_size"):
        images.iter_torch_batches(local_shuffle_seed=3)


def test_errors_in_the_pipeline_reach_the_training_loop():
    def boom(batch):
        raise RuntimeError("bad batch")

    ds = sb.range(10).map_batches(boom)
    with pytest.raises(sb.StreamBatchError, match="bad batch"):
        list(ds.iter_torch_batches(batch_size=4, device="cpu"))


def test_ragged_tensors_and_lists_of_numbers_become_tensors():
    """A variable-shape tensor column came out as its storage ({"data", "shape"} dicts);
    lists of numbers as Python lists. Now: one tensor per row for ragged rows, one 2-d
    tensor for lists of one length; strings, and lists holding nulls, stay as values."""
    rows = [{"img": np.full((2, i + 1), i, np.float32), "ids": [i, i + 1], "toks": list(range(i + 1)),
             "s": f"s{i}", "n": [None, i]} for i in range(4)]
    batch = next(iter(sb.from_items(rows, override_num_blocks=1).iter_torch_batches(batch_size=4)))
    assert [tuple(t.shape) for t in batch["img"]] == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in batch["img"])
    assert batch["img"][3].tolist() == [[3.0] * 4] * 2
    assert isinstance(batch["ids"], torch.Tensor) and batch["ids"].tolist() == [[i, i + 1] for i in range(4)]
    assert [t.tolist() for t in batch["toks"]] == [list(range(i + 1)) for i in range(4)]
    assert batch["s"] == ["s0", "s1", "s2", "s3"] and batch["n"] == [[None, i] for i in range(4)]
    typed = next(iter(sb.from_items(rows, override_num_blocks=1).select_columns(["img"])
                      .iter_torch_batches(batch_size=4, dtypes=torch.float64)))
    assert all(t.dtype == torch.float64 for t in typed["img"])


@pytest.mark.parametrize("source", ["numpy", "arrow", "pipeline"])
def test_an_in_place_op_on_a_batch_changes_neither_the_source_nor_a_later_epoch(source):
    """Tensors shared the (read-only) Arrow buffers and torch writes them anyway: a
    training step's batch["data"].add_(1) changed the user's array and every later
    epoch (DataLoader's collate gives new tensors)."""
    arr = np.zeros((64, 4), np.float32)
    ds = {"numpy": lambda: sb.from_numpy(arr),
          "arrow": lambda: sb.from_arrow(sb.from_numpy(arr).to_arrow()),
          "pipeline": lambda: sb.from_numpy(arr).map_batches(lambda b: b)}[source]()
    for epoch in range(3):
        seen = 0.0
        for batch in ds.iter_torch_batches(batch_size=16):
            seen = max(seen, float(batch["data"].max()))
            batch["data"].add_(1)
        assert seen == 0.0, (epoch, seen)
    assert float(arr.max()) == 0.0


def test_collate_fn_receives_numpy_batches_it_can_fill_nulls_in():
    """(Columns went through the tensor conversion first: a null number was refused before
    collate_fn could fill it, and strings came as a Python list.)"""
    got = {}

    def collate(batch):
        got.update({k: type(v).__name__ for k, v in batch.items()})
        return torch.from_numpy(np.nan_to_num(batch["x"]))

    table = pa.table({"x": [1.0, None, 3.0], "s": ["a", None, "c"]})
    out = list(sb.from_arrow(table).iter_torch_batches(batch_size=3, collate_fn=collate,
                                                       device="cpu"))
    assert [t.tolist() for t in out] == [[1.0, 0.0, 3.0]]
    assert got == {"x": "ndarray", "s": "ndarray"}
