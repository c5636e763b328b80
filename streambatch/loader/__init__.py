"""The training loader: what ``Dataset.iter_torch_batches``, ``Dataset.streaming_split``
and ``streambatch.torch`` are made of.

- ``epochs.py``: one epoch of a dataset as row-id'd blocks (read order, seeds,
  resumable position), and the torch iterable built on it.
- ``batches.py``: blocks to exact-size batches, with the local shuffle buffer
  (``shuffle.py``) and the position a ``state_dict()`` records.
- ``torch_batches.py``: batches to ``{column: torch.Tensor}`` (zero-copy, pinned
  memory, device copies).
- ``split_ranks.py``, ``split.py``, ``split_server.py``: one running pipeline fed
  to ``n`` data-parallel ranks (threads, or processes through a local server), with
  equal batch counts and errors naming a stuck or lost rank.

It runs a dataset through the public hooks :attr:`Dataset.logical_plan` and
:meth:`Dataset.executor`, like any consumer built on the engine.
"""
