"""Ray Data compatibility, small read arguments (issue 18): one block per input for
``from_arrow`` / ``from_numpy`` / ``from_pandas``, Ray's old read arguments
(``parallelism=``, ``ray_remote_args=``, ``concurrency=``, ``meta_provider=``,
``arrow_open_stream_args=``, ``**arrow_parquet_args``...), memory limits set on
``DataContext.execution_options``, and ``read_webdataset(expand_json=True)``.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors.datasource import Pushdowns
from streambatch.executor.options import ExecutionOptions, ExecutionResources

import streambatch as sb

MiB = 2**20


@pytest.fixture(autouse=True, scope="module")
def _engine():
    sb.init(num_cpus=2, memory_budget=256 * MiB)
    yield



def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------- one block per input, in order


def test_from_arrow_makes_one_block_per_table_in_order(ordered):
    tables = [pa.table({"x": list(range(i * 10, i * 10 + 10))}) for i in range(3)]
    assert sb.from_arrow(tables[0]).num_blocks() == 1
    ds = sb.from_arrow(tables)
    assert ds.num_blocks() == 3
    assert [r["x"] for r in ds.take_all()] == list(range(30))


def test_from_arrow_accepts_record_batches():
    batch = pa.record_batch({"x": [1, 2]})
    assert sb.from_arrow([batch, batch]).num_blocks() == 2


def test_from_numpy_makes_one_block_per_array_in_order(ordered):
    arrays = [np.arange(5), np.arange(5, 12), np.arange(12, 13)]
    ds = sb.from_numpy(arrays)
    assert ds.num_blocks() == 3
    assert [r["data"] for r in ds.take_all()] == list(range(13))
    assert sb.from_numpy(np.zeros((100, 2, 2))).num_blocks() == 1


def test_from_pandas_makes_one_block_per_frame_in_order(ordered):
    frames = [pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}), pd.DataFrame({"x": [4]})]
    ds = sb.from_pandas(frames)
    assert ds.num_blocks() == 3
    assert [r["x"] for r in ds.take_all()] == [1, 2, 3, 4]


@pytest.mark.parametrize("make", [
    lambda n: sb.from_arrow([pa.table({"x": list(range(0, 60))}),
                             pa.table({"x": list(range(60, 100))})], override_num_blocks=n),
    lambda n: sb.from_numpy([np.arange(60), np.arange(60, 100)], override_num_blocks=n),
    lambda n: sb.from_pandas([pd.DataFrame({"x": range(60)}), pd.DataFrame({"x": range(60, 100)})],
                             override_num_blocks=n),
], ids=["arrow", "numpy", "pandas"])
def test_override_num_blocks_joins_the_inputs_and_cuts_them(make, ordered):
    for n in (1, 4, 7):
        ds = make(n)
        assert ds.num_blocks() == n
        column = ds.columns()[0]
        assert [r[column] for r in ds.take_all()] == list(range(100))


def test_from_polars_makes_one_block_per_frame():
    pl = pytest.importorskip("polars")
    assert sb.from_polars([pl.DataFrame({"x": [1]}), pl.DataFrame({"x": [2, 3]})]).num_blocks() == 2


# ------------------------------------------------------------------------ parallelism=


def _csv_dir(tmp_path, files: int = 4):
    for i in range(files):
        (tmp_path / f"f{i}.csv").write_text("x\n" + "".join(f"{i * 10 + j}\n" for j in range(10)))
    return str(tmp_path)


def test_parallelism_is_a_deprecated_override_num_blocks():
    with pytest.warns(DeprecationWarning, match="override_num_blocks=3"):
        ds = sb.range(30, parallelism=3)
    assert ds.num_blocks() == 3
    with pytest.warns(DeprecationWarning):
        assert sb.from_items(list(range(10)), parallelism=2).num_blocks() == 2
    with pytest.warns(DeprecationWarning):
        assert sb.range_tensor(6, parallelism=3).num_blocks() == 3


def test_parallelism_minus_one_means_not_given():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sb.range(10, parallelism=-1).count() == 10


def test_parallelism_on_file_reads(tmp_path):
    path = _csv_dir(tmp_path, files=4)
    for n in (1, 4):
        with pytest.warns(DeprecationWarning):
            ds = sb.read_csv(path, parallelism=n)
        source = ds._plan.source
        assert source.parallelism == n
        assert len(source.read_tasks(source.parallelism, Pushdowns())) == \
            len(sb.read_csv(path, override_num_blocks=n)._plan.source.read_tasks(n, Pushdowns()))
        assert sorted(r["x"] for r in ds.take_all()) == list(range(40))


def test_parallelism_and_override_num_blocks_must_agree():
    with pytest.raises(ValueError, match="disagree"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb.range(10, parallelism=2, override_num_blocks=5)
    with pytest.warns(DeprecationWarning):
        assert sb.range(10, parallelism=5, override_num_blocks=5).num_blocks() == 5


def test_bad_parallelism_is_an_error():
    with pytest.raises(ValueError, match="parallelism"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb.range(10, parallelism=0)


# ------------------------------------------- scheduling hints: checked, warned, not applied


def test_scheduling_hints_are_accepted_with_a_warning_naming_them(tmp_path):
    path = _csv_dir(tmp_path)
    with pytest.warns(UserWarning, match=r"num_cpus=2, num_gpus=0, memory=1000000, concurrency=3"):
        ds = sb.read_csv(path, num_cpus=2, num_gpus=0, memory=1_000_000, concurrency=3)
    assert sorted(r["x"] for r in ds.take_all()) == list(range(40))


def test_ray_remote_args_resources_are_hints_other_keys_are_named(tmp_path):
    path = _csv_dir(tmp_path)
    with pytest.warns(UserWarning) as caught:
        ds = sb.read_csv(path, ray_remote_args={"num_cpus": 0.5, "scheduling_strategy": "SPREAD",
                                                "retry_exceptions": True})
    text = str(caught[0].message)
    assert "num_cpus=0.5" in text and "['retry_exceptions', 'scheduling_strategy']" in text
    assert ds.count() == 40


@pytest.mark.parametrize("kwargs, error", [
    ({"num_cpus": -1}, ValueError), ({"num_gpus": "one"}, ValueError),
    ({"concurrency": 0}, ValueError), ({"ray_remote_args": ["num_cpus"]}, TypeError),
])
def test_bad_scheduling_hints_are_errors(tmp_path, kwargs, error):
    with pytest.raises(error):
        sb.read_csv(_csv_dir(tmp_path), **kwargs)


def test_every_file_reader_takes_rays_read_arguments(tmp_path):
    from PIL import Image

    (tmp_path / "a.txt").write_text("hello\nworld\n")
    (tmp_path / "a.json").write_text('{"x": 1}\n{"x": 2}\n')
    np.save(tmp_path / "a.npy", np.arange(3))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "a.parquet")
    common = {"parallelism": 1, "num_cpus": 1, "concurrency": 2,
              "ray_remote_args": {"max_retries": 3}}
    d = str(tmp_path)
    counts = {
        "text": _quiet(sb.read_text, d + "/a.txt", arrow_open_stream_args={"buffer_size": 1 << 16},
                       **common).count(),
        "json": _quiet(sb.read_json, d + "/a.json", lines=True, **common).count(),
        "numpy": _quiet(sb.read_numpy, d + "/a.npy", mmap_mode="r", **common).count(),
        "binary": _quiet(sb.read_binary_files, d + "/a.txt", **common).count(),
        "images": _quiet(sb.read_images, d + "/a.png", arrow_open_file_args={}, **common).count(),
        "parquet": _quiet(sb.read_parquet, d + "/a.parquet", batch_size=2, use_threads=False,
                          **common).count(),
    }
    assert counts == {"text": 2, "json": 2, "numpy": 3, "binary": 1, "images": 1, "parquet": 3}


def test_read_datasource_and_read_sql_take_rays_read_arguments(tmp_path):
    import functools
    import sqlite3

    db = str(tmp_path / "a.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    ds = _quiet(sb.read_sql, "SELECT x FROM t", functools.partial(sqlite3.connect, db),
                parallelism=1, concurrency=2, ray_remote_args={"num_cpus": 1})
    assert sorted(r["x"] for r in ds.take_all()) == list(range(5))

    class Letters(sb.Datasource):
        def get_read_tasks(self, parallelism):
            return [sb.ReadTask(lambda c=c: [pa.table({"c": [c]})], sb.BlockMetadata(1, 8))
                    for c in "ab"]

    ds = _quiet(sb.read_datasource, Letters(), parallelism=2, num_gpus=0, memory=10)
    assert sorted(r["c"] for r in ds.take_all()) == ["a", "b"]


# ------------------------------------------ arguments that would change the rows: refused


def test_explicit_compression_is_refused_naming_the_argument(tmp_path):
    with pytest.raises(TypeError, match="arrow_open_stream_args.*infers compression"):
        sb.read_csv(_csv_dir(tmp_path), arrow_open_stream_args={"compression": "gzip"})
    with pytest.raises(TypeError, match="arrow_open_stream_args.*infers compression"):
        sb.read_binary_files(_csv_dir(tmp_path), arrow_open_stream_args={"compression": "infer"})
    with pytest.raises(TypeError, match=r"keys \['metadata'\]"):
        sb.read_text(_csv_dir(tmp_path), arrow_open_stream_args={"metadata": {}})


def test_compression_left_to_inference_is_accepted(tmp_path):
    import gzip

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"x\n1\n2\n"))
    ds = sb.read_csv(str(tmp_path), arrow_open_stream_args={"compression": "infer"})
    assert sorted(r["x"] for r in ds.take_all()) == [1, 2]


def test_meta_provider_rays_own_is_ignored_a_custom_one_refused(tmp_path):
    path = _csv_dir(tmp_path)
    ray_provider = type("DefaultFileMetadataProvider", (), {"__module__": "ray.data.datasource"})
    with pytest.warns(DeprecationWarning, match="meta_provider"):
        assert sb.read_csv(path, meta_provider=ray_provider()).count() == 40

    class MyProvider:
        pass

    with pytest.raises(TypeError, match="meta_provider=MyProvider cannot be honoured"):
        sb.read_csv(path, meta_provider=MyProvider())


@pytest.mark.parametrize("kwargs, match", [
    ({"tensor_column_schema": {"x": (np.float32, (2,))}}, "tensor_column_schema.*map_batches"),
    ({"_block_udf": lambda t: t}, "_block_udf.*map_batches"),
    ({"dataset_kwargs": {"ignore_prefixes": ["_"]}}, "dataset_kwargs.*partitioning="),
    ({"arrow_open_stream_args": {}}, "unexpected keyword argument 'arrow_open_stream_args'"),
    ({"colums": ["x"]}, "unexpected keyword argument 'colums'"),
])
def test_parquet_args_that_change_the_rows_are_refused(tmp_path, kwargs, match):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    with pytest.raises(TypeError, match=match):
        sb.read_parquet(str(tmp_path), **kwargs)


def test_format_options_we_cannot_pass_on_are_refused(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}\n')
    np.save(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(TypeError, match="read_json: parse_options= cannot be honoured"):
        sb.read_json(str(tmp_path / "a.json"), parse_options=object())
    with pytest.raises(TypeError, match="read_numpy: allow_pickle=True cannot be honoured"):
        sb.read_numpy(str(tmp_path / "a.npy"), allow_pickle=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'arrow_open_file_args'"):
        sb.read_text(str(tmp_path / "a.json"), arrow_open_file_args={})
    assert sb.read_numpy(str(tmp_path / "a.npy"), allow_pickle=False).count() == 3


def test_partition_filter_on_read_webdataset(tmp_path):
    for part in ("a", "b"):
        sb.from_items([{"__key__": f"{part}0", "txt": part}]).write_webdataset(
            str(tmp_path / f"part={part}"))
    keep_a = sb.PathPartitionFilter.of(lambda values: values["part"] == "a")
    rows = sb.read_webdataset(str(tmp_path), partition_filter=keep_a).take_all()
    assert [r["txt"] for r in rows] == ["a"]


# --------------------------------------------------------------- memory limits on the context


@pytest.fixture
def fresh_options():
    ctx = sb.DataContext.get_current()
    before, ctx.execution_options = ctx.execution_options, ExecutionOptions()
    yield ctx.execution_options
    ctx.execution_options = before


def test_memory_budget_set_on_the_options_is_parsed_as_init_parses_it(fresh_options):
    ctx = sb.DataContext.get_current()
    ctx.execution_options.memory_budget = "1GB"
    assert ctx.execution_options.memory_budget == 1_000_000_000 == \
        sb.init(memory_budget="1GB").execution_options.memory_budget
    ctx.execution_options.memory_budget = "512MiB"
    assert ctx.execution_options.resolved_memory_budget() == 512 * MiB
    ctx.execution_options.memory_budget = 2e9
    assert ctx.execution_options.memory_budget == 2_000_000_000


def test_a_bad_memory_budget_fails_at_assignment(fresh_options):
    with pytest.raises(ValueError, match=r"execution_options.memory_budget='lots' is not a size"):
        fresh_options.memory_budget = "lots"


def test_resource_limits_set_cpus_gpus_and_the_memory_budget(fresh_options):
    fresh_options.resource_limits = ExecutionResources(cpu=3, gpu=0.5, object_store_memory=1e9)
    assert (fresh_options.num_cpus, fresh_options.num_gpus, fresh_options.memory_budget) == \
        (3, 0.5, 1_000_000_000)
    fresh_options.resource_limits.object_store_memory = 300 * MiB  # as Ray's docs do
    fresh_options.resource_limits.cpu = 2
    assert fresh_options.memory_budget == 300 * MiB and fresh_options.num_cpus == 2
    limits = fresh_options.resource_limits
    assert (limits.cpu, limits.gpu, limits.object_store_memory) == (2, 0.5, 300 * MiB)
    fresh_options.resource_limits = limits.copy(cpu=None)
    assert fresh_options.num_cpus is None and fresh_options.memory_budget == 300 * MiB
    assert sb.range(100).count() == 100


def test_resource_limits_are_checked(fresh_options):
    with pytest.raises(ValueError, match="whole number of CPU slots"):
        fresh_options.resource_limits = ExecutionResources.for_limits(cpu=1.5)
    with pytest.raises(TypeError, match="ExecutionResources"):
        fresh_options.resource_limits = {"cpu": 2}
    with pytest.raises(ValueError, match="resource_limits.object_store_memory='lots'"):
        fresh_options.resource_limits = ExecutionResources(object_store_memory="lots")
    fresh_options.resource_limits = ExecutionResources(object_store_memory="2GiB")
    assert fresh_options.memory_budget == 2 * 2**30


# ----------------------------------------------------------- read_webdataset(expand_json=)


def _shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_expand_json_makes_the_json_keys_columns(tmp_path):
    meta = {"a": [1, 2], "b": {"c": 2}, "d": "hello"}
    sb.from_items([{"__key__": "foo", "json": meta, "txt": "hi"}]).write_webdataset(str(tmp_path))
    [row] = sb.read_webdataset(str(tmp_path), expand_json=True).take_all()
    assert row["a"] == [1, 2] and row["b"] == {"c": 2} and row["d"] == "hello"
    assert row["json"] == meta and row["txt"] == "hi" and row["__key__"] == "foo"


def test_expand_json_with_raw_bytes_and_many_samples(tmp_path, ordered):
    _shard(tmp_path / "s.tar", {f"k{i}": {"json": json.dumps({"label": i}).encode(),
                                          "bin": bytes([i % 256])} for i in range(300)})
    rows = sb.read_webdataset(str(tmp_path), decoder=None, expand_json=True).take_all()
    assert [r["label"] for r in rows] == list(range(300))
    assert isinstance(rows[0]["json"], bytes) and rows[5]["bin"] == b"\x05"


def test_expand_json_errors_name_the_sample(tmp_path):
    _shard(tmp_path / "s.tar", {"k0": {"json": b'{"txt": 1}', "txt": b"x"}})
    with pytest.raises(Exception, match=r"sample 'k0'.*\['txt'\].*columns already"):
        sb.read_webdataset(str(tmp_path), expand_json=True).take_all()
    _shard(tmp_path / "s.tar", {"k1": {"txt": b"x"}})
    with pytest.raises(Exception, match="sample 'k1' has no json member"):
        sb.read_webdataset(str(tmp_path), expand_json=True).take_all()
    _shard(tmp_path / "s.tar", {"k2": {"json": b"[1, 2]"}})
    with pytest.raises(Exception, match="sample 'k2'.*not a JSON object"):
        sb.read_webdataset(str(tmp_path), expand_json=True).take_all()


def test_expand_json_bad_samples_can_be_skipped(tmp_path):
    _shard(tmp_path / "a.tar", {"k0": {"json": b'{"v": 1}'}})
    _shard(tmp_path / "b.tar", {"k1": {"txt": b"x"}})
    ds = sb.read_webdataset(str(tmp_path), expand_json=True, on_error="skip")
    assert [r["v"] for r in ds.take_all()] == [1]
    assert len(ds.dead_letters()) == 1


def test_expand_json_must_be_a_bool(tmp_path):
    _shard(tmp_path / "s.tar", {"k0": {"json": b"{}"}})
    with pytest.raises(TypeError, match="expand_json"):
        sb.read_webdataset(str(tmp_path), expand_json="yes")
