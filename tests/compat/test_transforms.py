"""Ray Data's transforms as its documentation describes them, with only the import changed:
callable classes in map / flat_map / filter (constructed once per worker, with their
constructor arguments), fn_args / fn_kwargs, constructor arguments for a function
rejected, add_column broadcasting a scalar, numpy integer batch sizes, batch_format=None,
take_all(limit), a UDF returning the wrong type raising ValueError, and the default batch
format: a dict of numpy arrays, as the quickstart's code expects."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


class AddK:
    """Ray Data's docs' shape of a callable class: state built in __init__."""

    def __init__(self, k: int = 1, *, tag: str = "") -> None:
        self.k, self.tag = k, tag
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex}"

    def __call__(self, row: dict) -> dict:
        return {"id": row["id"] + self.k, "tag": self.tag, "instance": self.instance}


class KeepMultiplesOf:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, row: dict) -> bool:
        return row["id"] % self.n == 0


class Repeat:
    def __init__(self, times: int = 2) -> None:
        self.times = times

    def __call__(self, row: dict) -> list[dict]:
        return [{"id": row["id"], "copy": i} for i in range(self.times)]


@pytest.mark.parametrize("concurrency", [None, 1, 2])
def test_map_constructs_a_callable_class_once_per_worker(concurrency):
    ds = sb.range(200, override_num_blocks=10).map(
        AddK, fn_constructor_args=(10,), fn_constructor_kwargs={"tag": "t"},
        concurrency=concurrency)
    rows = ds.take_all()
    assert sorted(r["id"] for r in rows) == list(range(10, 210))
    assert {r["tag"] for r in rows} == {"t"}
    instances = {r["instance"] for r in rows}
    assert 1 <= len(instances) <= (concurrency or 2), instances  # not one per row or block


def test_filter_and_flat_map_take_callable_classes():
    ds = sb.range(30, override_num_blocks=3)
    assert sorted(r["id"] for r in ds.filter(KeepMultiplesOf, fn_constructor_args=(7,))
                  .take_all()) == [0, 7, 14, 21, 28]
    got = sorted((r["id"], r["copy"]) for r in ds.flat_map(Repeat, fn_constructor_kwargs={
        "times": 3}).take_all())
    assert got == [(i, c) for i in range(30) for c in range(3)]


def test_a_class_without_constructor_arguments_and_fn_args():
    class Scale:
        def __call__(self, row, factor, offset=0):
            return {"v": row["id"] * factor + offset}

    got = sb.range(4).map(Scale, fn_args=(3,), fn_kwargs={"offset": 1}).take_all()
    assert sorted(r["v"] for r in got) == [1, 4, 7, 10]
    got = sb.range(4).filter(lambda r, m: r["id"] % m == 0, fn_args=(2,)).take_all()
    assert sorted(r["id"] for r in got) == [0, 2]


@pytest.mark.parametrize("method", ["map", "flat_map", "filter", "map_batches"])
def test_constructor_arguments_for_a_function_are_an_error(method):
    with pytest.raises(ValueError, match="fn_constructor_args .* callable class"):
        getattr(sb.range(3), method)(lambda r: r, fn_constructor_args=(1,))


def test_a_constructor_that_raises_names_the_constructor():
    class Broken:
        def __init__(self):
            raise RuntimeError("no model here")

        def __call__(self, row):
            return row

    with pytest.raises(Exception, match="constructor") as info:
        sb.range(3).map(Broken).take_all()
    assert "no model here" in str(info.value)


@pytest.mark.parametrize("value,fmt", [(1, "pandas"), ("x", "numpy"), (2.5, "pyarrow"),
                                       (np.int16(3), "pandas"), (None, "numpy")])
def test_add_column_broadcasts_a_scalar(value, fmt):
    got = sb.range(5, override_num_blocks=2).add_column("c", lambda b: value,
                                                          batch_format=fmt).take_all()
    want = value.item() if hasattr(value, "item") else value
    assert sorted((r["id"], r["c"]) for r in got) == [(i, want) for i in range(5)]


def test_batch_size_may_be_a_numpy_integer_and_batch_format_none():
    sizes = sb.range(10, override_num_blocks=1).map_batches(
        lambda b: {"n": [b.num_rows]}, batch_size=np.int64(4), batch_format=None, releases_gil=False).take_all()
    assert sorted(r["n"] for r in sizes) == [2, 4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        sb.range(3).map_batches(lambda b: b, batch_size=np.int64(0), releases_gil=False)


def test_take_all_with_a_limit():
    assert len(sb.range(5).take_all(limit=5)) == 5
    assert sb.range(0).take_all(limit=0) == []
    with pytest.raises(ValueError, match="more than 4 rows"):
        sb.range(5).take_all(limit=4)


@pytest.mark.parametrize("returned", [42, "text", [1, 2]])
def test_a_batch_udf_returning_the_wrong_type_raises_value_error(returned):
    with pytest.raises(ValueError, match="returned"):
        sb.range(3).map_batches(lambda b: returned, releases_gil=False).take_all()
    with pytest.raises(TypeError):  # and still a TypeError, as before
        sb.range(3).map_batches(lambda b: returned, releases_gil=False).take_all()


class QuotaError(Exception):
    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


@pytest.mark.parametrize("mode", ["threads", "processes"])
@pytest.mark.parametrize("raised,caught", [(ValueError("bad row"), ValueError),
                                           (KeyError("col"), KeyError),
                                           (ZeroDivisionError("zero"), ArithmeticError)])
def test_a_udf_error_is_caught_as_its_own_type(mode, raised, caught):
    """As Ray Data's task errors are instances of the user's exception type, so is ours
    (and a UserCodeError naming the stage and row, chained to the original)."""
    sb.init(num_cpus=2, worker_mode=mode)

    def fail(row):
        raise raised

    with pytest.raises(caught) as info:
        sb.range(3).map(fail).take_all()
    assert isinstance(info.value, sb.UserCodeError)
    assert "row 0" in str(info.value) and type(raised).__name__ in str(info.value)
    assert isinstance(info.value.__cause__, type(raised))


def test_a_udf_error_keeps_the_original_attributes():
    def fail(row):
        raise QuotaError("slow down", retry_after=7)

    with pytest.raises(QuotaError) as info:
        sb.range(2).map(fail, releases_gil=True).take_all()
    assert info.value.retry_after == 7


def test_the_default_batch_format_is_a_dict_of_numpy_arrays_as_in_the_quickstart():
    ds = sb.from_items([{"a": i, "b": 2 * i} for i in range(6)])
    out = ds.map_batches(lambda batch: {"c": batch["a"] * batch["b"]}, releases_gil=False).take_all()
    assert sorted(r["c"] for r in out) == [2 * i * i for i in range(6)]
    seen = ds.map_batches(lambda batch: {"kinds": [sorted({type(v).__name__ for v in
                                                            batch.values()})]}, releases_gil=False).take_all()
    assert {tuple(r["kinds"]) for r in seen} == {("ndarray",)}
    assert sb.range(10).take_batch(3)["id"].tolist() == [0, 1, 2]
    batches = list(sb.range(5, override_num_blocks=1).iter_batches(batch_size=2))
    assert [b["id"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]


def test_a_torch_model_takes_the_default_batch_as_is():
    torch = pytest.importorskip("torch")
    ds = sb.from_numpy(np.arange(12, dtype=np.float32).reshape(4, 3))

    def double(batch):
        return {"y": (torch.as_tensor(batch["data"]) * 2).numpy()}

    rows = ds.map_batches(double, releases_gil=False).take_all()
    assert [r["y"].tolist() for r in rows] == [[2 * (3 * i + j) for j in range(3)] for i in range(4)]


def test_map_groups_hands_numpy_groups_by_default():
    ds = sb.from_items([{"k": i % 2, "v": i} for i in range(6)])
    out = ds.groupby("k").map_groups(lambda g: {"k": g["k"][:1], "total": [g["v"].sum()]})
    assert sorted((r["k"], r["total"]) for r in out.take_all()) == [(0, 6), (1, 9)]
