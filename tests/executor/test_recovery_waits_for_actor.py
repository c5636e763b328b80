"""Lost-partition recovery on an actor stage whose pool is replacing a dead actor:
the re-run waits for the replacement instead of starting as a plain task that
asks for the same resources (one GPU) and could wait forever behind it."""

from __future__ import annotations

from types import SimpleNamespace as NS

from streambatch.executor.actor_pool import ActorInfo, ActorPool
from streambatch.executor.backends.base import TaskDone, TaskOutput
from streambatch.executor.contract import TaskStage
from streambatch.executor.recovery import LostInputRecovery, Recipe
from streambatch.executor.resources import ResourceLedger


class RecordingBackend:
    def __init__(self) -> None:
        self.submitted, self.released = [], []

    def submit(self, task) -> None:
        self.submitted.append(task)

    def release(self, ref) -> None:
        self.released.append(ref)


def _setup(stage_done: bool):
    backend = RecordingBackend()
    stages = [NS(name="ReadRange"), NS(name="MapBatches(Model)")]
    pool = ActorPool(1, TaskStage("MapBatches(Model)"), (1, 1), depth=2)
    recovery = LostInputRecovery(backend, stages, {1: pool}, iter(range(100, 200)), 3,
                                 stage_done=lambda index: stage_done)
    read = Recipe(0, 3, (), 0, "partition 3")
    part = NS(stage=1, ref="lost", recipe=Recipe(1, None, (read,), 0, "partition 3"))
    ready = []
    recovery.recover_partition(part, "MapBatches(Model)", ready.append)
    [read_task] = backend.submitted  # the read re-runs at once (no pool)
    recovery.on_event(TaskOutput(read_task.task_id, "read block", 10, 80))
    recovery.on_event(TaskDone(read_task.task_id, 0.1))
    return backend, pool, recovery, part, ready


def test_rerun_waits_for_the_replacement_actor_then_runs_on_it():
    backend, pool, recovery, part, ready = _setup(stage_done=False)
    assert len(backend.submitted) == 1 and recovery.busy(1)
    assert recovery.waiting_for_actors() == ["MapBatches(Model)"]
    recovery.submit_waiting()  # still no actor: still waiting, nothing submitted
    assert len(backend.submitted) == 1

    alloc = ResourceLedger(num_cpus=1).acquire(TaskStage("m").resources)
    pool.actors[7] = ActorInfo(7, alloc)  # the pool's scaling placed the replacement
    recovery.submit_waiting()
    rerun = backend.submitted[-1]
    assert (rerun.actor_id, rerun.stage_index, rerun.input_refs) == (7, 1, ["read block"])
    assert pool.actors[7].in_flight == 1 and recovery.waiting_for_actors() == []

    recovery.on_event(TaskOutput(rerun.task_id, "model block", 10, 80))
    recovery.on_event(TaskDone(rerun.task_id, 0.2))
    assert ready == [part] and part.ref == "model block"
    assert pool.actors[7].in_flight == 0 and not recovery.busy(1)


def test_rerun_of_a_finished_actor_stage_runs_as_a_plain_task():
    backend, _, recovery, _, _ = _setup(stage_done=True)  # its pool was released for good
    assert [t.actor_id for t in backend.submitted] == [None, None]
    assert backend.submitted[-1].stage_index == 1
