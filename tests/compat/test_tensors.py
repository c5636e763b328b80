"""Ray Data's tensor behaviour, with only the import changed: rows holding n-d numpy arrays
or torch tensors, ragged arrays, read_images rows and batches, range_tensor, and a batch
UDF returning n-d arrays. Values come back as numpy arrays of their own shape and dtype."""

from __future__ import annotations

import os

import numpy as np
import pytest

import streambatch as sb


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def test_rows_holding_nd_arrays_come_back_as_arrays():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3) * i for i in range(4)]
    got = sb.from_items([{"i": i, "x": a} for i, a in enumerate(arrays)],
                        override_num_blocks=2).take_all()
    for row in got:
        assert isinstance(row["x"], np.ndarray) and row["x"].dtype == np.float32
        np.testing.assert_array_equal(row["x"], arrays[row["i"]])
    mapped = sb.range(3).map(lambda r: {"i": r["id"], "x": np.full((2, 2, 2), r["id"])}).take_all()
    assert [(r["x"].shape, int(r["x"].sum())) for r in mapped] == [((2, 2, 2), 8 * i)
                                                                  for i in range(3)]


def test_torch_tensors_in_rows_become_numpy_arrays():
    torch = pytest.importorskip("torch")
    got = sb.from_items([{"t": torch.full((2, 3), float(i))} for i in range(3)]).take_all()
    assert all(isinstance(r["t"], np.ndarray) and r["t"].shape == (2, 3) for r in got)
    assert sorted(float(r["t"][0, 0]) for r in got) == [0.0, 1.0, 2.0]
    out = sb.range(2).map(lambda r: {"t": torch.ones(4) * r["id"]}).take_all()
    assert [r["t"].tolist() for r in out] == [[0.0] * 4, [1.0] * 4]


def test_ragged_arrays_keep_each_rows_shape():
    ragged = np.array([np.zeros(2), np.ones(3), np.full(1, 2.0)], dtype=object)
    got = sb.from_numpy(ragged).take_all()
    assert [r["data"].tolist() for r in got] == [[0.0, 0.0], [1.0, 1.0, 1.0], [2.0]]
    rows = sb.from_items([{"v": np.zeros((2, 2))}, {"v": np.zeros((3, 1))}]).take_all()
    assert [r["v"].shape for r in rows] == [(2, 2), (3, 1)]


def test_read_images_rows_are_arrays_and_batches_stack(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4 + i, 5, 3), i * 40, np.uint8)).save(tmp_path / f"im{i}.png")
    rows = sorted(sb.read_images(str(tmp_path)).take_all(), key=lambda r: r["image"].shape)
    assert [(r["image"].shape, r["image"].dtype) for r in rows] == [
        ((4, 5, 3), np.uint8), ((5, 5, 3), np.uint8), ((6, 5, 3), np.uint8)]
    assert [int(r["image"][0, 0, 0]) for r in rows] == [0, 40, 80]
    batch = sb.read_images(str(tmp_path), size=(8, 8)).take_batch(3, batch_format="numpy")
    assert isinstance(batch["image"], np.ndarray) and batch["image"].shape == (3, 8, 8, 3)
    assert sorted(os.path.basename(p) for p in sb.read_images(
        str(tmp_path), include_paths=True).to_pandas()["path"]) == ["im0.png", "im1.png", "im2.png"]


def test_range_tensor_and_batch_udfs_returning_nd_arrays():
    first = sb.range_tensor(5, shape=(2, 2)).take_all()
    assert [r["data"].tolist() for r in first[:2]] == [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]
    out = sb.range(6, override_num_blocks=2).map_batches(
        lambda b: {"x": np.stack([np.eye(3) * i for i in b["id"]])}, batch_format="numpy")
    batch = out.take_batch(6, batch_format="numpy")
    assert batch["x"].shape == (6, 3, 3)
    assert sorted(float(m.trace()) for m in batch["x"]) == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]


@pytest.mark.parametrize("mode, source_mode", [("RGB", "RGB"), ("RGB", "RGBA"), ("L", "RGB")])
def test_read_images_resizes_as_ray_data_does(tmp_path, mode, source_mode):
    """Ray Data resizes with bilinear resampling, then converts the mode: the same call
    gives the same pixels (Pillow's bicubic after the conversion differed by up to 12)."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    Image.fromarray(pixels).convert(source_mode).save(tmp_path / "a.png")
    got = sb.read_images(str(tmp_path), size=(7, 5), mode=mode).take_all()[0]["image"]
    with Image.open(tmp_path / "a.png") as img:
        want = np.asarray(img.resize((5, 7), resample=Image.Resampling.BILINEAR).convert(mode))
    assert np.array_equal(got, want)


def test_read_images_with_a_size_decodes_a_large_jpeg_small_and_close(tmp_path):
    """Pillow's draft decodes a JPEG at reduced scale before the resize: the pixels stay
    close to a full decode resized the same way."""
    from PIL import Image

    y, x = np.mgrid[0:1200, 0:1600]
    photo = np.stack([(x / 7) % 256, (y / 5) % 256, ((x + y) / 11) % 256], axis=-1)
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "big.jpg", quality=90)
    got = sb.read_images(str(tmp_path), size=(150, 200)).take_all()[0]["image"]
    with Image.open(tmp_path / "big.jpg") as img:
        want = np.asarray(img.convert("RGB").resize((200, 150)))
    assert got.shape == want.shape == (150, 200, 3)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < 8
