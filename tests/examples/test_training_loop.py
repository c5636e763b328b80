"""examples/training_loop.py: two gloo DDP ranks (processes) fed by streaming_split(2)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

import training_loop as tl  # noqa: E402


def test_two_ranks_share_every_epoch_equally_and_learn_the_same_model(tmp_path):
    rows, epochs = 3000, 2
    # spawn: a fork of this test process (threads left by earlier tests: kept thread
    # pools, Ray clients) could copy a lock some thread holds and hang the rank
    summary = tl.main(rows=rows, epochs=epochs, batch_size=100, workdir=str(tmp_path),
                      quiet=True, start_method="spawn")
    # equal=True: both ranks take the same number of steps each epoch (DDP needs it)
    for epoch in range(epochs):
        steps = [summary["steps_per_rank"][r][epoch] for r in range(tl.WORLD_SIZE)]
        assert steps[0] == steps[1] >= 14
        # every row reaches exactly one rank once per epoch
        ids = [summary["ids"][r][epoch] for r in range(tl.WORLD_SIZE)]
        assert min(len(i) for i in ids) > 0
        assert np.array_equal(np.sort(np.concatenate(ids)), np.arange(rows))
    # gradients were all-reduced: both ranks hold the same weights, and they are right
    np.testing.assert_allclose(summary["weights"][0], summary["weights"][1], rtol=0, atol=1e-6)
    assert summary["weight_error"] < 0.05
    first, last = summary["loss_per_epoch"]
    assert last < first / 10
