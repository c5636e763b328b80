"""The pipeline keeps working while the training step holds a batch: the executor runs
on its own thread, so finished tasks are replaced even when batch assembly waits."""

from __future__ import annotations

import threading

import streambatch as sb


def test_pipeline_runs_ahead_while_the_trainer_holds_a_batch():
    # 12 one-row read partitions on 2 slots; the UDF notes which rows ran. The trainer
    # takes the first batch and then waits. Held by then: the trainer's batch, one in
    # the prefetch queue, one in batch assembly (waiting to be queued), one handed over
    # by the executor, and the executor's next one: rows 0-4 must have run. With the
    # executor inside batch assembly it stopped after rows 0-3 (it paused while the
    # assembly waited for the trainer, and nothing replaced finished tasks).
    ran = {i: threading.Event() for i in range(12)}

    def note(batch):
        for i in batch["id"].tolist():
            ran[i].set()
        return batch

    ds = sb.range(12, override_num_blocks=12).map_batches(note, batch_format="numpy",
                                                          releases_gil=True, batch_size=1)
    it = iter(ds.iter_torch_batches(batch_size=1, device="cpu"))
    first = next(it)
    assert ran[4].wait(timeout=30), [i for i, e in ran.items() if e.is_set()]
    rest = [int(b["id"]) for b in it]
    assert sorted(rest + [int(first["id"])]) == list(range(12))
