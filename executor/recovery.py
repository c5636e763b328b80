"""Lost-input recovery: recompute lost partitions from their lineage.

A cluster backend can lose blocks (a Ray node leaves and its object store goes
with it). The executor records, for every partition a task produced, a
:class:`Recipe`: the stage, the read task or the input partitions' own recipes,
and which output of the task it was. Recipes hold no blocks, only metadata, so
freed partitions stay freed. When a task fails because an input block was lost
(``FailureInfo("lost")``), :class:`LostInputRecovery` re-runs the producing
tasks, back to the read tasks where the intermediate blocks are gone too,
takes the wanted output of each re-run (UDFs are deterministic), swaps the new
blocks into the failed task's inputs and hands the task back for its retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streambatch.executor.backends.base import Task, TaskDone, TaskFailed, TaskOutput
from streambatch.executor.errors import BlockLostError, NonDeterministicError
from streambatch.executor.partition import first_row_of
from streambatch.executor.task_failures import to_error


@dataclass(frozen=True, eq=False)
class Recipe:
    """How to make one partition again: output ``ordinal`` of a task of ``stage`` on
    read task ``read_index`` or on the partitions ``inputs`` describe (None for a
    partition made on the driver, which cannot be recomputed).

    >>> r = Recipe(0, 3, (), 1, "partition 3")
    >>> r.recomputable, Recipe(1, None, (None,), 0, "partition 0").recomputable
    (True, False)
    """

    stage: int
    read_index: int | None
    inputs: tuple
    ordinal: int
    description: str
    key: str = ""  # the task's lineage key and first row: a re-run sees what the
    first_row: int | None = None  # first run saw (a shuffle's buckets come from them)
    sizes: tuple = ()  # ((field, value), ...) of the Task's output sizes: cut as at first

    @property
    def recomputable(self) -> bool:
        """True when every partition it depends on has a recipe too."""
        return all(r is not None and r.recomputable for r in self.inputs)


def recipe_of(task, ordinal: int) -> Recipe:
    """The recipe of output ``ordinal`` of a running task (a ``RunningTask``).

    >>> from types import SimpleNamespace as NS
    >>> recipe_of(NS(stage_index=0, read_index=2, inputs=[], description="p 2"), 0).read_index
    2
    """
    return Recipe(task.stage_index, task.read_index,
                  tuple(getattr(p, "recipe", None) for p in task.inputs), ordinal,
                  task.description, getattr(task, "key", ""), first_row_of(task.inputs),
                  tuple(sorted((getattr(task, "sizes", None) or {}).items())))


@dataclass(eq=False)
class _Job:
    """One re-run of the task a recipe names, waiting for its inputs first."""

    recipe: Recipe
    done: Callable[[Any], None]  # callback(ref)
    refs: list = field(default_factory=list)
    pending: int = 0
    seen: int = 0
    ref: object = None
    attempts: int = 1
    actor_id: int | None = None


class LostInputRecovery:
    """Re-runs the tasks that made lost partitions, then hands the failed task back.

    ``pools`` maps actor-stage indexes to their pools (a lost partition made by an
    actor stage is re-made on one of its live actors); ``ids`` hands out task ids.

    >>> rec = LostInputRecovery(None, [], {}, iter(range(10)), 3)
    >>> rec.busy(0), rec.recomputed
    (False, 0)
    """

    def __init__(self, backend, stages: list, pools: dict, ids, max_attempts: int,
                 stats_of=None, actor_died=None, stage_done=None) -> None:
        self.backend, self.stages, self.pools, self.ids = backend, stages, pools, ids
        self.max_attempts = max_attempts
        self.stats_of = stats_of  # stage index -> its StageStats (counts the re-runs)
        self.actor_died = actor_died  # (stage index, actor id): a re-run's actor died
        self.stage_done = stage_done or (lambda index: False)  # its pool released for good
        self._jobs: dict[int, _Job] = {}  # backend task id -> job
        self._no_actor: list[_Job] = []  # re-runs waiting for their pool's replacement actor
        self._waiting: dict[int, int] = {}  # stage index -> tasks or outputs being recovered
        self.recomputed = 0

    # ---- what the executor asks -----------------------------------------
    def busy(self, stage_index: int) -> bool:
        """True while a task (or an output) of this stage waits for recomputed blocks."""
        return self._waiting.get(stage_index, 0) > 0

    def waiting_for_actors(self) -> list[str]:
        """Stage names whose re-runs wait for an actor (the pool is replacing one).

        >>> LostInputRecovery(None, [], {}, iter(()), 3).waiting_for_actors()
        []
        """
        return sorted({self.stages[job.recipe.stage].name for job in self._no_actor})

    def submit_waiting(self) -> None:
        """Submit the re-runs whose pool has an actor again (call after scaling pools)."""
        jobs, self._no_actor = self._no_actor, []
        for job in jobs:
            self._submit(job)

    def owns(self, event) -> bool:
        """True for the events of the re-runs this object submitted."""
        return getattr(event, "task_id", None) in self._jobs

    def recover_inputs(self, task, stage_name: str, on_ready) -> None:
        """Recompute every input of ``task`` (a RunningTask whose input was lost), put
        the new blocks in its input partitions, then call ``on_ready(task)``. Inputs
        made on the driver (no recipe) are kept: the backend sends them anew."""
        parts = [p for p in task.inputs if getattr(p, "recipe", None) is not None]
        for part in parts:
            self._check(part.recipe, stage_name, task.description)
        if not parts:
            on_ready(task)
            return
        self._waiting[task.stage_index] = self._waiting.get(task.stage_index, 0) + 1
        left = [len(parts)]

        def one_done(part, ref) -> None:
            self.backend.release(part.ref)
            part.ref = ref
            left[0] -= 1
            if left[0] == 0:
                self._waiting[task.stage_index] -= 1
                on_ready(task)

        for part in parts:
            self._compute(part.recipe, lambda ref, p=part: one_done(p, ref))

    def recover_partition(self, part, stage_name: str, on_ready) -> None:
        """Recompute one lost partition (e.g. a final output lost before the driver
        fetched it); ``on_ready(part)`` once its new block is in place."""
        recipe = self._check(getattr(part, "recipe", None), stage_name,
                             f"an output partition of {stage_name}")
        self._waiting[part.stage] = self._waiting.get(part.stage, 0) + 1

        def done(ref) -> None:
            part.ref = ref
            self._waiting[part.stage] -= 1
            on_ready(part)

        self._compute(recipe, done)

    def on_event(self, event) -> None:
        """Handle an event of a re-run; raises when a re-run cannot succeed."""
        job = self._jobs.get(event.task_id)
        if job is None:
            raise RuntimeError(f"LostInputRecovery.on_event: task {event.task_id} is not a "
                               "re-run of this object (ask owns(event) first)")
        if isinstance(event, (TaskDone, TaskFailed)) and job.actor_id is not None:
            self.pools[job.recipe.stage].task_ended(job.actor_id)
        if isinstance(event, TaskOutput):
            if job.seen == job.recipe.ordinal:
                job.ref = event.ref
            else:
                self.backend.release(event.ref)
            job.seen += 1
        elif isinstance(event, TaskDone):
            del self._jobs[event.task_id]
            self._finish(job)
        elif isinstance(event, TaskFailed):
            del self._jobs[event.task_id]
            self._failed(job, event.failure)

    # ---- internals ------------------------------------------------------
    def _check(self, recipe: Recipe | None, stage_name: str, where: str) -> Recipe:
        """``recipe`` when it can be recomputed, else BlockLostError."""
        if recipe is None or not recipe.recomputable:
            raise BlockLostError(stage_name, where, "it was made on the driver (limit, "
                                 "repartition or union), so there is no lineage to recompute it")
        return recipe

    def _compute(self, recipe: Recipe, done) -> None:
        job = _Job(recipe, done, [None] * len(recipe.inputs), len(recipe.inputs))
        if not recipe.inputs:
            self._submit(job)
            return
        for i, sub in enumerate(recipe.inputs):
            self._compute(sub, lambda ref, j=job, k=i: self._input_ready(j, k, ref))

    def _input_ready(self, job: _Job, index: int, ref) -> None:
        job.refs[index] = ref
        job.pending -= 1
        if job.pending == 0:
            self._submit(job)

    def _submit(self, job: _Job) -> None:
        recipe = job.recipe
        pool = self.pools.get(recipe.stage)
        actor_id = None
        if pool is not None and pool.actors:  # the newest: a replacement, not a dying one
            actor_id = next(reversed(pool.actors))
            pool.task_started(actor_id)
        elif pool is not None and not self.stage_done(recipe.stage):
            # The pool is replacing a dead actor. A plain task asking for the stage's
            # resources (a GPU) could wait forever behind the replacement holding them.
            self._no_actor.append(job)
            return
        # else a plain task with the stage's resources builds the stage's classes itself
        # (an actor stage that finished and released its pool)
        job.actor_id = actor_id
        task_id = next(self.ids)
        job.seen, job.ref = 0, None
        self._jobs[task_id] = job
        self.recomputed += 1
        if self.stats_of is not None:
            self.stats_of(recipe.stage).recomputed += 1
        self.backend.submit(Task(task_id, recipe.stage, recipe.read_index, list(job.refs),
                                 f"{recipe.description} (recomputing a lost output)", actor_id,
                                 recipe.key, recipe.first_row, **dict(recipe.sizes)))

    def _finish(self, job: _Job) -> None:
        for ref in job.refs:
            self.backend.release(ref)
        if job.ref is None:
            raise NonDeterministicError(self.stages[job.recipe.stage].name,
                                        job.recipe.description, job.recipe.ordinal + 1, job.seen)
        job.done(job.ref)

    def _failed(self, job: _Job, failure) -> None:
        stage = self.stages[job.recipe.stage].name
        if failure.kind not in ("lost", "died") or job.attempts > self.max_attempts:
            raise to_error(failure, stage, f"{job.recipe.description} (while recomputing a "
                                           "lost partition)")
        job.attempts += 1
        if failure.kind == "died" and job.actor_id is not None and self.actor_died:
            self.actor_died(job.recipe.stage, job.actor_id)  # the pool starts a replacement
        if failure.kind == "died" or not job.recipe.inputs:
            self._submit(job)
            return
        for ref in job.refs:  # an input of the re-run was lost too: make them all again
            self.backend.release(ref)
        job.refs, job.pending = [None] * len(job.recipe.inputs), len(job.recipe.inputs)
        for i, sub in enumerate(job.recipe.inputs):
            self._compute(sub, lambda ref, j=job, k=i: self._input_ready(j, k, ref))


__all__ = ["LostInputRecovery", "Recipe", "recipe_of"]
