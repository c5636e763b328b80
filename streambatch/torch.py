"""PyTorch adapters. ``streambatch.torch.IterableDataset`` lets an existing
``torch.utils.data.DataLoader`` loop use a streambatch Dataset with one line::

    loader = DataLoader(sb.torch.IterableDataset(ds, batch_size=64), batch_size=None)

The engine already batches, parallelizes and prefetches, so the DataLoader gets
``batch_size=None`` (pass batches through) and ``num_workers=0``. Importing this
module does not import torch; the class is built on first use.

>>> import streambatch as sb
>>> from torch.utils.data import DataLoader
>>> loader = DataLoader(sb.torch.IterableDataset(sb.range(10), batch_size=4), batch_size=None)
>>> [len(b["id"]) for b in loader]
[4, 4, 2]
"""

from __future__ import annotations

_CLASS = None


def _make_class():
    from streambatch.loader.torch_batches import torch_module

    base = torch_module().utils.data.IterableDataset

    class IterableDataset(base):
        """A ``torch.utils.data.IterableDataset`` over ``ds.iter_torch_batches(**kwargs)``.

        Each iteration is one epoch; ``state_dict`` / ``load_state_dict`` resume
        mid-epoch. Use it with ``DataLoader(..., batch_size=None, num_workers=0)``.

        >>> import streambatch as sb
        >>> d = sb.torch.IterableDataset(sb.range(3), batch_size=2, device="cpu")
        >>> [b["id"].tolist() for b in d]
        [[0, 1], [2]]
        """

        def __init__(self, dataset, **iter_torch_batches_kwargs) -> None:
            super().__init__()
            self.dataset = dataset
            self.batches = dataset.iter_torch_batches(**iter_torch_batches_kwargs)

        def __iter__(self):
            info = torch_module().utils.data.get_worker_info()
            if info is not None:  # (one worker: its position and epochs would live in
                why = ("every worker would read the whole dataset" if info.num_workers > 1
                       else "state_dict() in the training process would not see its "
                            "position, nor a seeded shuffle its epochs")  # the worker's copy)
                raise RuntimeError(
                    f"streambatch.torch.IterableDataset runs inside DataLoader worker "
                    f"{info.id} of {info.num_workers}: {why}. Use DataLoader(..., "
                    f"num_workers=0, batch_size=None); the engine parallelizes and prefetches "
                    f"itself")
            return iter(self.batches)

        def state_dict(self) -> dict:
            """Position in the current epoch (see ``iter_torch_batches``)."""
            return self.batches.state_dict()

        def load_state_dict(self, state: dict) -> None:
            """Resume the saved epoch on the next iteration."""
            self.batches.load_state_dict(state)

    return IterableDataset


def __getattr__(name: str):
    global _CLASS
    if name == "IterableDataset":
        if _CLASS is None:
            _CLASS = _make_class()
        return _CLASS
    raise AttributeError(f"module 'streambatch.torch' has no attribute {name!r}")
