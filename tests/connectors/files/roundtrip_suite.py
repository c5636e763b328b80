"""A filesystem-independent round-trip suite for the file connectors.

``FileRoundTrip`` is subclassed once per filesystem (local, ``memory://``,
``s3://`` against moto's server), like fsspec's ``tests/abstract`` suites: a
subclass provides a ``root`` fixture (a URL prefix, unique per test) and
``fs`` (the fsspec filesystem behind it). Every format is written by
streambatch and read back by streambatch, and the rows must be equal.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import streambatch as sb


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def mixed_table(n: int = 40) -> pa.Table:
    """ints, floats, strings with nulls, tz timestamps, lists and structs."""
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "f": pa.array([i / 4 for i in range(n)], pa.float64()),
        "s": pa.array([None if i % 7 == 0 else f"s{i}" for i in range(n)], pa.string()),
        "ts": pa.array([base + dt.timedelta(hours=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "l": pa.array([list(range(i % 3)) for i in range(n)], pa.list_(pa.int64())),
        "st": pa.array([{"a": i, "b": str(i)} for i in range(n)],
                       pa.struct([("a", pa.int64()), ("b", pa.string())])),
    })


class FileRoundTrip:
    """Subclasses define the ``root`` and ``fs`` fixtures."""

    def put(self, fs, path: str, data: bytes) -> None:
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as handle:
            handle.write(data)

    # ---- parquet ----------------------------------------------------------------
    def test_parquet_round_trip_keeps_types(self, root):
        table = mixed_table()
        files = sb.from_arrow(table, override_num_blocks=3).write_parquet(f"{root}/pq")
        assert len(files) == 3 and sum(f["rows"] for f in files) == 40
        back = sb.read_parquet(f"{root}/pq").to_arrow()
        assert by_id(back).equals(table)

    def test_parquet_partition_cols_round_trip_as_hive_columns(self, root, fs):
        table = pa.table({"id": list(range(12)), "k": [i % 3 for i in range(12)],
                          "v": [f"v{i}" for i in range(12)]})
        sb.from_arrow(table, override_num_blocks=2).write_parquet(f"{root}/hive", partition_cols=["k"])
        dirs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/hive", detail=False)
                      if "=" in p)
        assert dirs == ["k=0", "k=1", "k=2"]
        back = by_id(sb.read_parquet(f"{root}/hive").to_arrow())
        assert back.select(["id", "v", "k"]).equals(table.select(["id", "v", "k"]))
        only = sb.read_parquet(f"{root}/hive", filter=pa.compute.field("k") == 2).to_arrow()
        assert sorted(only["id"].to_pylist()) == [2, 5, 8, 11]

    def test_parquet_target_file_bytes_rolls_files(self, root):
        table = pa.table({"id": np.arange(40_000), "x": np.random.default_rng(0).random(40_000)})
        files = sb.from_arrow(table, override_num_blocks=1).map_batches(
            lambda b: b, batch_size=5_000, releases_gil=True).write_parquet(
            f"{root}/rolled", target_file_bytes=100_000)
        assert len(files) >= 3 and sum(f["rows"] for f in files) == 40_000
        assert by_id(sb.read_parquet(f"{root}/rolled").to_arrow()).equals(table)

    # ---- csv / json / text / binary ----------------------------------------------
    def test_csv_round_trip(self, root):
        table = mixed_table().select(["id", "f", "s"])
        sb.from_arrow(table, override_num_blocks=2).write_csv(f"{root}/csv")
        back = by_id(sb.read_csv(f"{root}/csv").to_arrow())
        assert back.equals(table)

    def test_json_lines_round_trip(self, root):
        table = mixed_table().select(["id", "f", "s", "l", "st"])
        sb.from_arrow(table, override_num_blocks=2).write_json(f"{root}/json")
        back = by_id(sb.read_json(f"{root}/json").to_arrow())
        assert back.to_pylist() == table.to_pylist()

    def test_json_lines_with_lists_whose_first_values_are_null(self, root, fs):
        """pyarrow's JSON reader read [null, 3] as [3, 0] and [null, "a"] as invalid
        strings (its type inference), and made lists of only nulls ("z") invalid arrays;
        every value must come back as written."""
        rows = [{"id": 0, "l": [None, 3], "s": [None, "a"], "n": [[None], [None, 2]], "z": [None]},
                {"id": 1, "l": [None, None, 3, 4], "s": ["b", None], "n": None, "z": None},
                {"id": 2, "l": [1, None], "s": [None], "n": [[], [3]], "z": []},
                {"id": 3, "l": None, "s": [], "n": [[None, None]], "z": [None, None]}]
        self.put(fs, f"{root}/nulls/a.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        assert sorted(sb.read_json(f"{root}/nulls").take_all(), key=lambda r: r["id"]) == rows
        sb.from_items(rows, override_num_blocks=2).write_json(f"{root}/nulls_out")
        assert sorted(sb.read_json(f"{root}/nulls_out").take_all(), key=lambda r: r["id"]) == rows

    def test_json_arrays_and_lines_read_together(self, root, fs):
        self.put(fs, f"{root}/mixed/a.json", b'[{"id": 1, "x": "a"}, {"id": 2, "x": "b"}]')
        self.put(fs, f"{root}/mixed/b.jsonl", b'{"id": 3, "x": "c"}\n{"id": 4, "x": null}\n')
        rows = sorted(sb.read_json(f"{root}/mixed").take_all(), key=lambda r: r["id"])
        assert rows == [{"id": 1, "x": "a"}, {"id": 2, "x": "b"}, {"id": 3, "x": "c"},
                        {"id": 4, "x": None}]

    def test_text_a_row_per_line_with_glob_and_paths(self, root, fs):
        self.put(fs, f"{root}/txt/a.txt", b"alpha\nbeta\n")
        self.put(fs, f"{root}/txt/b.txt", b"gamma\n\ndelta")
        self.put(fs, f"{root}/txt/skip.md", b"not me")
        rows = sb.read_text(f"{root}/txt/*.txt", include_paths=True).take_all()
        got = sorted((r["path"].rsplit("/", 1)[-1], r["text"]) for r in rows)
        assert got == [("a.txt", "alpha"), ("a.txt", "beta"), ("b.txt", "delta"), ("b.txt", "gamma")]

    def test_binary_files_bytes_and_paths_from_a_list(self, root, fs):
        blobs = {f"{root}/bin/{i}.dat": bytes(range(i, i + 5)) for i in range(3)}
        for path, data in blobs.items():
            self.put(fs, path, data)
        rows = sb.read_binary_files(list(blobs)).take_all()
        assert {r["path"].rsplit("/", 1)[-1]: r["bytes"] for r in rows} == {
            p.rsplit("/", 1)[-1]: d for p, d in blobs.items()}

    # ---- numpy / images ------------------------------------------------------------
    def test_numpy_tensor_round_trip(self, root):
        arr = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)
        sb.from_numpy(arr, override_num_blocks=2).write_numpy(f"{root}/npy", column="data")
        back = sb.read_numpy(f"{root}/npy").to_numpy("data")
        assert back.shape == (10, 3, 2)
        np.testing.assert_array_equal(back[np.argsort(back[:, 0, 0])], arr)

    def test_images_round_trip_fixed_shape_named_from_a_column(self, root):
        imgs = np.random.default_rng(1).integers(0, 255, (4, 6, 5, 3), dtype=np.uint8)
        table = pa.table({"image": pa.FixedShapeTensorArray.from_numpy_ndarray(imgs),
                          "name": [f"img{i}" for i in range(4)]})
        files = sb.from_arrow(table, override_num_blocks=2).write_images(
            f"{root}/img", column="image", filename_column="name")
        assert sorted(f["path"].rsplit("/", 1)[-1] for f in files) == [f"img{i}.png" for i in range(4)]
        out = sb.read_images(f"{root}/img", include_paths=True).to_arrow()
        assert out.schema.field("image").type.extension_name == "arrow.fixed_shape_tensor"
        order = np.argsort([p.rsplit("/", 1)[-1] for p in out["path"].to_pylist()])
        from streambatch.connectors.tensors import tensor_to_numpy

        np.testing.assert_array_equal(tensor_to_numpy(out["image"])[order], imgs)

    def test_images_of_different_sizes_are_variable_shape(self, root, fs):
        for i, (h, w) in enumerate([(4, 4), (6, 3)]):
            buf = io.BytesIO()
            Image.fromarray(np.full((h, w, 3), i * 50, np.uint8)).save(buf, format="PNG")
            self.put(fs, f"{root}/var/{i}.png", buf.getvalue())
        out = sb.read_images(f"{root}/var", include_paths=True).to_arrow()
        assert out.schema.field("image").type.extension_name == "arrow.variable_shape_tensor"
        from streambatch.connectors.tensors import tensor_to_numpy

        arrays = dict(zip(out["path"].to_pylist(), tensor_to_numpy(out["image"]), strict=True))
        shapes = {p.rsplit("/", 1)[-1]: a.shape for p, a in arrays.items()}
        assert shapes == {"0.png": (4, 4, 3), "1.png": (6, 3, 3)}
        resized = sb.read_images(f"{root}/var", size=(2, 2)).to_numpy("image")
        assert resized.shape == (2, 2, 2, 3)

    def test_corrupt_image_error_names_the_file(self, root, fs):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(buf, format="PNG")
        self.put(fs, f"{root}/bad/good.png", buf.getvalue())
        self.put(fs, f"{root}/bad/broken.png", b"\x89PNG not really")
        with pytest.raises(Exception, match=r"broken\.png.*not a readable image"):
            sb.read_images(f"{root}/bad").take_all()

    # ---- errors --------------------------------------------------------------------
    def test_missing_path_names_itself(self, root):
        with pytest.raises(FileNotFoundError, match="read_csv: no such file or directory"):
            sb.read_csv(f"{root}/nothing-here").take_all()

    def test_parquet_files_written_by_pyarrow_directly(self, root, fs):
        for i in range(3):
            buf = io.BytesIO()
            pq.write_table(pa.table({"id": [i], "x": [i * 1.5]}), buf)
            self.put(fs, f"{root}/raw/{i}.parquet", buf.getvalue())
        assert sorted(sb.read_parquet(f"{root}/raw").to_arrow()["id"].to_pylist()) == [0, 1, 2]
