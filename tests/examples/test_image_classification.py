"""examples/image_classification.py: JPEG parquet -> decode/resize -> CNN actor pool -> parquet,
run as a library call and through the ``streambatch infer`` CLI with the same UDFs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

import image_classification as ic  # noqa: E402


def test_generated_jpegs_are_seeded_and_decode_to_normalized_tensors(tmp_path):
    ic.generate(str(tmp_path / "a"), 10, files=2)
    ic.generate(str(tmp_path / "b"), 10, files=2)
    a, b = pq.read_table(tmp_path / "a"), pq.read_table(tmp_path / "b")
    assert a.num_rows == 10 and a.equals(b)
    assert a["image"][0].as_py()[:2] == b"\xff\xd8"  # JPEG magic
    out = ic.preprocess({"id": np.arange(10), "image": a["image"].to_pylist()})
    assert out["pixels"].shape == (10, 3, ic.INPUT_SIZE, ic.INPUT_SIZE)
    assert out["pixels"].dtype == np.float32
    assert -2.2 < out["pixels"].min() < 0 < out["pixels"].max() < 2.7  # ImageNet-normalized


def test_pipeline_and_cli_classify_every_image_once_accurately_and_alike(tmp_path):
    summary = ic.main(images=400, workdir=str(tmp_path), quiet=True)
    assert summary["rows"] == 400
    table = pq.read_table(summary["output"]).sort_by("id")
    assert table["id"].to_pylist() == list(range(400))
    assert set(table["label"].to_pylist()) <= set(range(ic.CLASSES))
    assert all(1 / ic.CLASSES <= s <= 1.0 for s in table["score"].to_pylist())
    # the seeded CNN finds the shape's colour; a constant guess would score ~10%
    assert summary["accuracy"] >= 0.9
    assert sum(summary["label_counts"]) == 400 and max(summary["label_counts"]) < 150
    assert (Path(summary["output"]) / "_SUCCESS").exists()

    # the CLI runs the same module-level UDFs over the same files: same predictions
    images, preds = str(tmp_path / "images"), str(tmp_path / "cli-preds")
    gpu = ["--num-gpus", "1"] if torch.cuda.is_available() else []
    result = subprocess.run(
        [sys.executable, "-m", "streambatch", "infer", "--input", images,
         "--columns", "id,image", "--preprocess", "image_classification:preprocess",
         "--model", "image_classification:Classifier", "--output", preds,
         "--batch-size", "128", "--num-cpus", "2", "--concurrency", "1", "--no-progress", *gpu],
        env=dict(os.environ, PYTHONPATH=str(EXAMPLES)), capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    assert "done: 400 rows" in result.stdout
    assert "MapBatches(Classifier)" in result.stdout
    cli_table = pq.read_table(preds).sort_by("id")
    assert cli_table["id"].equals(table["id"])
    assert cli_table["label"].equals(table["label"])


def test_the_udfs_import_as_examples_dot_module_from_the_repository_root():
    code = ("from streambatch.jobspec import load_object as load; "
            "print(load('examples.image_classification:Classifier', '--model').__name__, "
            "load('examples.image_classification:preprocess', '--preprocess').__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Classifier", "preprocess"]
