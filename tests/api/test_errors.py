"""Errors: user-code failures, wrong return types, and a failed write.

Contract: a UDF exception surfaces as sb.UserCodeError naming the stage, the
partition and (for row UDFs) the row, plus the original exception type, message
and worker traceback; ``__cause__`` is the original exception when picklable.
A wrong return type surfaces as sb.UDFReturnTypeError (also a TypeError) naming
the stage, the type it got and the types expected. A failed write_parquet
leaves neither _SUCCESS nor part files behind.
"""

from __future__ import annotations

import os
import re

import pyarrow.parquet as pq
import pytest

import streambatch as sb

ITEMS = [{"name": f"r{i}", "i": i} for i in range(20)]


class BoomError(Exception):
    """A user exception type the engine cannot know about."""


class NeedsTwoArgsError(Exception):
    """Pickles but cannot be unpickled (its __init__ needs two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"needs-two {a}/{b}")


# ------------------------------------------------------------------------- failing UDFs


def map_fails_on_r7(row):
    if row["name"] == "r7":
        raise ValueError("bad row r7")
    return row


def filter_fails_on_r7(row):
    if row["name"] == "r7":
        raise ValueError("bad row r7")
    return True


def flat_map_fails_on_r7(row):
    if row["name"] == "r7":
        raise ValueError("bad row r7")
    return [row]


def batch_fails_on_r13(batch):
    if "r13" in batch["name"].to_pylist():
        raise BoomError("batch holding r13 exploded")
    return batch


def raises_unpicklable(row):
    if row["name"] == "r3":
        raise NeedsTwoArgsError("x", "y")
    return row


class FailingModel:
    def __call__(self, batch):
        if "r11" in batch["name"].to_pylist():
            raise BoomError("model choked on r11")
        return batch


def batch_returns_wrong_type(batch):
    return 5


def map_returns_wrong_type(row):
    return [row["name"]]


def fail_on_id_95(batch):
    if 95 in batch["id"].to_pylist():
        raise BoomError("partition with id 95 failed")
    return batch


# -------------------------------------------------------------------------- UserCodeError


@pytest.mark.parametrize(
    "method,fn",
    [("map", map_fails_on_r7), ("filter", filter_fails_on_r7), ("flat_map", flat_map_fails_on_r7)],
)
def test_row_udf_exception_becomes_user_code_error(method, fn):
    ds = getattr(sb.from_items(ITEMS, override_num_blocks=4), method)(fn)
    with pytest.raises(sb.UserCodeError) as info:
        ds.take_all()
    err = info.value
    msg = str(err)
    assert isinstance(err, sb.StreamBatchError)
    # where: stage (by the function's name), partition, row
    assert fn.__name__ in err.stage
    assert err.stage in msg
    assert err.partition and str(err.partition) in msg and "partition" in msg.lower()
    assert err.row is not None and "r7" in str(err.row)
    assert "r7" in msg
    # what: original type and message, and the worker's traceback text
    assert "ValueError" in msg and "bad row r7" in msg
    assert "Traceback" in msg
    assert f"in {fn.__name__}" in msg  # the traceback frame of the user function
    assert "test_errors.py" in msg
    assert isinstance(err.__cause__, ValueError)
    assert str(err.__cause__) == "bad row r7"


def test_batch_udf_exception_becomes_user_code_error():
    ds = sb.from_items(ITEMS, override_num_blocks=2).map_batches(batch_fails_on_r13, batch_size=4, batch_format="pyarrow")
    with pytest.raises(sb.UserCodeError) as info:
        list(ds.iter_batches(batch_size=5, batch_format="pyarrow"))
    err = info.value
    msg = str(err)
    assert "batch_fails_on_r13" in err.stage and err.stage in msg
    assert "partition" in msg.lower()
    assert "BoomError" in msg and "batch holding r13 exploded" in msg
    assert "in batch_fails_on_r13" in msg
    assert isinstance(err.__cause__, BoomError)


def test_class_udf_exception_names_the_class_stage():
    ds = sb.from_items(ITEMS, override_num_blocks=4).map_batches(
        FailingModel, batch_size=5, concurrency=1, batch_format="pyarrow"
    )
    with pytest.raises(sb.UserCodeError) as info:
        ds.materialize()
    err = info.value
    assert "FailingModel" in err.stage
    assert "BoomError" in str(err) and "model choked on r11" in str(err)
    assert "in __call__" in str(err)
    assert isinstance(err.__cause__, BoomError)


def test_unpicklable_exception_still_reported_with_type_and_message():
    ds = sb.from_items(ITEMS, override_num_blocks=2).map(raises_unpicklable)
    with pytest.raises(sb.UserCodeError) as info:
        ds.take_all()
    msg = str(info.value)
    assert "NeedsTwoArgsError" in msg and "needs-two x/y" in msg
    assert "raises_unpicklable" in info.value.stage
    assert "r3" in msg


def test_engine_still_works_after_a_user_error():
    with pytest.raises(sb.UserCodeError):
        sb.from_items(ITEMS, override_num_blocks=4).map(map_fails_on_r7).take_all()
    assert sorted(r["name"] for r in sb.from_items(ITEMS, override_num_blocks=4).map(
        lambda r: r).take_all()) == sorted(r["name"] for r in ITEMS)


# ---------------------------------------------------------------------- UDFReturnTypeError


def test_map_batches_wrong_return_type():
    ds = sb.range(10).map_batches(batch_returns_wrong_type, batch_format="pyarrow")
    with pytest.raises(sb.UDFReturnTypeError) as info:
        ds.take_all()
    err = info.value
    msg = str(err)
    assert isinstance(err, TypeError) and isinstance(err, sb.StreamBatchError)
    assert "batch_returns_wrong_type" in msg
    assert re.search(r"\bint\b", msg), msg
    assert "dict" in msg and ("Table" in msg or "DataFrame" in msg)


def test_map_wrong_return_type():
    ds = sb.from_items(ITEMS).map(map_returns_wrong_type)
    with pytest.raises(sb.UDFReturnTypeError) as info:
        ds.take_all()
    msg = str(info.value)
    assert "map_returns_wrong_type" in msg
    assert re.search(r"\blist\b", msg), msg
    assert "dict" in msg


# -------------------------------------------------------------------------- failed write


def test_failed_write_parquet_leaves_no_success_and_no_part_files(tmp_path):
    out = tmp_path / "out"
    ds = sb.range(100, override_num_blocks=10).map_batches(fail_on_id_95, batch_format="pyarrow")
    with pytest.raises(sb.UserCodeError) as info:
        ds.write_parquet(str(out))
    assert "fail_on_id_95" in info.value.stage
    leftovers = []
    if out.exists():
        for root, _dirs, files in os.walk(out):
            leftovers += [os.path.join(root, f) for f in files]
    assert not (out / "_SUCCESS").exists()
    assert [f for f in leftovers if f.endswith(".parquet")] == []


def test_failed_write_then_successful_rewrite_to_same_path(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(sb.UserCodeError):
        sb.range(100, override_num_blocks=10).map_batches(fail_on_id_95, batch_format="pyarrow").write_parquet(str(out))
    sb.range(50, override_num_blocks=2).write_parquet(str(out))
    assert (out / "_SUCCESS").is_file()
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-") and n.endswith(".parquet"))
    assert len(parts) == 2
    got = sorted(v for p in parts for v in pq.read_table(str(out / p)).column("id").to_pylist())
    assert got == list(range(50))
