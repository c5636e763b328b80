"""streambatch.torch.IterableDataset: an existing DataLoader loop adopts the engine in one line."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import streambatch as sb

from .conftest import ids_of


def train(loader, epochs=2):
    """An ordinary DataLoader training loop (a linear model on the image pixels)."""
    model = torch.nn.Linear(3 * 4 * 4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    seen = []
    for _ in range(epochs):
        ids = []
        for batch in loader:
            x = batch["img"].reshape(len(batch["img"]), -1).float()
            loss = ((model(x).squeeze(1) - batch["label"]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ids += batch["id"].tolist()
        seen.append(sorted(ids))
    return seen


def test_dataloader_loop_adopts_the_engine_in_one_line(images):
    loader = DataLoader(sb.torch.IterableDataset(images, batch_size=64, device="cpu",
                                                 local_shuffle_buffer_size=200), batch_size=None)
    assert isinstance(loader.dataset, torch.utils.data.IterableDataset)
    assert train(loader) == [list(range(1000))] * 2


def test_dataloader_state_resumes_mid_epoch(images):
    ds = sb.torch.IterableDataset(images, batch_size=100, device="cpu")
    it = iter(DataLoader(ds, batch_size=None))
    first = [next(it)["id"] for _ in range(3)]
    state = ds.state_dict()
    del it
    again = sb.torch.IterableDataset(images, batch_size=100, device="cpu")
    again.load_state_dict(state)
    rest = ids_of(DataLoader(again, batch_size=None))
    assert sorted(ids_of([{"id": t} for t in first]) + rest) == list(range(1000))


@pytest.mark.parametrize("workers,why", [(2, "every worker would read the whole dataset"),
                                         (1, "state_dict.. in the training process")])
def test_worker_processes_are_refused_with_the_fix(images, workers, why):
    """(One worker was accepted: its position lived in the worker's copy, so the training
    process's state_dict() said 0 rows after 5 batches and a resume repeated them.)"""
    loader = DataLoader(sb.torch.IterableDataset(images, batch_size=64), batch_size=None,
                        num_workers=workers)
    with pytest.raises(RuntimeError, match=f"{why}.*num_workers=0"):
        next(iter(loader))
