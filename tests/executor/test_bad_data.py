"""Bad input: every kind gives the documented error or dead-letter record; nothing is dropped."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init(num_cpus=2)


def explode_on_multiples_of_7(row):
    if row["id"] % 7 == 0:
        raise ValueError(f"bad id {row['id']}")
    return {"id": row["id"], "ok": True}


def batch_explodes_on_zero(batch):
    if 0 in batch["id"].to_pylist():
        raise RuntimeError("batch holds id 0")
    return batch


def test_skipped_rows_go_to_dead_letters_with_row_stage_and_error():
    ds = sb.range(50, override_num_blocks=5).map(explode_on_multiples_of_7, on_error="skip")
    ids = sorted(r["id"] for r in ds.take_all())
    dead = ds.dead_letters().to_pylist()
    failed = sorted(json.loads(d["row"])["id"] for d in dead)
    assert failed == [0, 7, 14, 21, 28, 35, 42, 49]
    assert sorted(ids + failed) == list(range(50))  # nothing silently dropped
    assert all(d["error"].startswith("ValueError: bad id") for d in dead)
    assert all("Map(explode_on_multiples_of_7)" in d["stage"] for d in dead)
    assert sum(s.errored_rows for s in ds.stats().stages) == 8


def test_skipped_batches_send_every_row_of_the_batch():
    ds = sb.range(20, override_num_blocks=1).map_batches(batch_explodes_on_zero, batch_size=5,
                                                         on_error="skip", batch_format="pyarrow", releases_gil=False)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(5, 20))
    dead = ds.dead_letters().to_pylist()
    assert sorted(json.loads(d["row"])["id"] for d in dead) == [0, 1, 2, 3, 4]
    assert dead[0]["where"] == "batch of rows 0-4 of the partition"


def test_filter_and_flat_map_skip_too():
    f = sb.range(10).filter(lambda r: 1 // (r["id"] - 3) >= 0, on_error="skip")
    assert sorted(r["id"] for r in f.take_all()) == [4, 5, 6, 7, 8, 9]
    assert len(f.dead_letters()) == 1
    fm = sb.range(4).flat_map(lambda r: [r] * (2 // (r["id"] - 1)), on_error="skip")
    assert fm.count() == 3  # id0: 2//-1 = -2 copies -> none; id1 fails; id2: 2; id3: 1
    assert len(fm.dead_letters()) == 1


def test_failure_budget_stops_a_mostly_failing_job():
    sb.init(num_cpus=2, max_errored_rows=3)
    ds = sb.range(100, override_num_blocks=4).map(explode_on_multiples_of_7, on_error="skip")
    with pytest.raises(sb.TooManyErrorsError, match="max_errored_rows=3"):
        ds.count()


def test_dead_letters_are_written_next_to_the_output(tmp_path):
    out = tmp_path / "out"
    ds = sb.range(30, override_num_blocks=3).map(explode_on_multiples_of_7, on_error="skip")
    files = ds.write_parquet(str(out))
    assert sum(f["rows"] for f in files) == 30 - 5
    errors = pq.read_table(str(out / "_errors")).to_pylist()
    assert sorted(json.loads(e["row"])["id"] for e in errors) == [0, 7, 14, 21, 28]


def test_default_raise_names_stage_partition_and_row():
    with pytest.raises(sb.UserCodeError) as info:
        sb.range(20, override_num_blocks=2).map(explode_on_multiples_of_7).take_all()
    assert "Map(explode_on_multiples_of_7)" in str(info.value)
    assert "partition" in str(info.value) and "row 0: {'id': 0}" in str(info.value) or \
        "row 4: {'id': 14}" in str(info.value)


def test_user_errors_retry_only_when_asked(tmp_path):
    attempts = tmp_path / "attempts"
    attempts.mkdir()

    class RateLimited(Exception):
        pass

    def flaky(batch):
        open(attempts / f"a{len(os.listdir(attempts))}", "w").close()
        if len(os.listdir(attempts)) < 3:
            raise RateLimited("slow down")
        return batch

    ds = sb.range(5, override_num_blocks=1).map_batches(flaky, max_retries=3,
                                                        retry_exceptions=[RateLimited], batch_format="pyarrow", releases_gil=False)
    assert ds.count() == 5
    assert ds.stats().stages[-1].retries == 2
    with pytest.raises(sb.UserCodeError):
        sb.range(5, override_num_blocks=1).map_batches(
            lambda b: 1 / 0, max_retries=3, retry_exceptions=[RateLimited], batch_format="pyarrow", releases_gil=False).count()


def test_wrong_row_count_from_add_column_is_an_error():
    with pytest.raises(sb.UserCodeError, match="returned a column of 1 values for a batch of"):
        sb.range(6, override_num_blocks=1).add_column("x", lambda b: [1]).take_all()


def test_non_dict_row_is_a_return_type_error():
    with pytest.raises(sb.UDFReturnTypeError, match="returned int; expected one of: dict"):
        sb.range(3).map(lambda r: 5).take_all()


def test_parquet_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        sb.read_parquet(str(tmp_path / "nope.parquet")).count()


def test_unexpected_table_schema_is_not_silently_dropped(tmp_path):
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "x.parquet")
    with pytest.raises(sb.UserCodeError, match="column"):
        sb.read_parquet(str(tmp_path)).select_columns(["a"]).map(lambda r: {"b": r["zz"]}).count()


def test_a_retry_with_fewer_outputs_is_reported_as_non_deterministic(tmp_path):
    """First attempt passes on 4 output partitions then dies; the retry makes only 1."""
    from streambatch.executor.errors import NonDeterministicError

    sb.init(num_cpus=2, target_partition_bytes=2**20)
    flag = tmp_path / "first-attempt"

    def emit_then_die(batch):
        if not flag.exists():
            flag.write_text("x")
            for i in range(4):  # four ~1 MiB blocks: each becomes its own output partition
                yield {"blob": ["y" * 2**20], "i": [i]}
            os._exit(3)
        yield {"blob": ["y"], "i": [0]}

    ds = sb.range(1, override_num_blocks=1).map_batches(emit_then_die, batch_size=None, batch_format="pyarrow", releases_gil=False)
    with pytest.raises(NonDeterministicError, match="produced 1 output partitions, but the "
                                                     "first run had already passed on 4"):
        ds.count()
