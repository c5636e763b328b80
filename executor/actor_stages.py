"""The actor pools of one execution: placed when it starts, scaled on each stage's
backlog, dead actors dropped (the next scaling starts a replacement), released when
their stage finishes. The executor decides what runs; this object only keeps the
pools, the backend's actors and the resource ledger in step."""

from __future__ import annotations

from streambatch.executor.actor_pool import ActorPool
from streambatch.executor.contract import TaskStage
from streambatch.executor.next_task import queued_bundles, upstream_rows
from streambatch.executor.nodes import NodeLedger
from streambatch.executor.resources import ResourceLedger
from streambatch.executor.stage_state import StageState


class ActorStages:
    """Pools by stage index (``pools``), started on ``backend`` within ``ledger``.

    >>> from streambatch.executor.contract import Resources
    >>> stages = ActorStages(None, ResourceLedger(num_cpus=4, num_gpus=2), depth=2)
    >>> stages.bounds(TaskStage("M", resources=Resources(num_cpus=1, num_gpus=1)))
    (1, 2)
    >>> stages.count(0)
    0
    """

    def __init__(self, backend, ledger: ResourceLedger | NodeLedger, depth: int = 2,
                 idle_timeout_s: float = 1.0, observers=()) -> None:
        self.backend, self.ledger, self.observers = backend, ledger, observers
        self.depth, self.idle_timeout_s = depth, idle_timeout_s
        self.pools: dict[int, ActorPool] = {}

    def start(self, states: list[StageState]) -> None:
        """Place every actor stage's minimum of actors (or fail naming the stage)."""
        for st in states:
            if st.stage.uses_actors:
                pool = ActorPool(st.index, st.stage, self.bounds(st.task_stage), self.depth,
                                 self.idle_timeout_s)
                self.pools[st.index] = pool
                pool.start_minimum(self.ledger, self._starter(st))
        gpu_pools = [p for p in self.pools.values() if p.stage.resources.num_gpus]
        for pool in gpu_pools:  # (pools that share the GPUs scale on their queues alone)
            pool.looks_ahead = len(gpu_pools) == 1

    def bounds(self, stage: TaskStage) -> tuple[int, int]:
        """(min, max) actors: the stage's ``concurrency``, else 1 up to what fits."""
        if stage.concurrency is not None:
            return stage.concurrency
        fit = self.ledger.num_cpus / max(stage.resources.num_cpus, 1e-9)
        if stage.resources.num_gpus:
            fit = min(fit, self.ledger.num_gpus / stage.resources.num_gpus)
        return (1, max(1, int(fit)))

    def scale(self, states: list[StageState]) -> None:
        """Grow or shrink each unfinished stage's pool to its queued + in-flight work."""
        for index, pool in self.pools.items():
            st = states[index]
            if not st.finished:
                pool.scale(self.ledger, self._backlog(states, st, pool), self._starter(st),
                           self._stopper(st))

    @staticmethod
    def _backlog(states: list[StageState], st: StageState, pool: ActorPool) -> int:
        """Tasks the pool has: in flight and queued; for the one GPU pool of a plan with a
        batch size, also the batches of the rows still on their way to it (read
        estimates, queued and running inputs upstream; see ``upstream_rows``). A GPU
        actor's start-up (a model's load) then overlaps the upstream's work, where it
        had waited for input that the memory budget held back (seed 207 of the sweep: 16
        GPUs, actors started one by one after their input was admitted, 34% of the
        optimum; 62% now). Pools that share the GPUs do not look ahead: an upstream
        pool holding GPUs for rows to come starved the slow pool after it (8 s -> 16 s)."""
        batch = st.stage.batch_rows
        coming = upstream_rows(states, st) if pool.looks_ahead and batch else 0
        if not coming:
            return queued_bundles(st) + pool.in_flight()
        queued = sum(p.rows for q in st.inputs.values() for p in q)
        return pool.in_flight() + -(-(queued + coming) // batch)  # (one rounding: a part
        # batch queued and the rest still coming are one task)

    def release(self, st: StageState) -> None:
        """The stage has no more work: stop its idle actors and free their resources."""
        if st.index in self.pools:
            self.pools[st.index].release_all(self.ledger, self._stopper(st))

    def actor_died(self, st: StageState, actor_id: int) -> None:
        """Drop a dead actor; the next scaling starts a replacement (constructor again)."""
        pool = self.pools.get(st.index)
        if pool is not None and pool.forget(actor_id, self.ledger):
            self.backend.stop_actor(actor_id)
            st.stats.actor_restarts += 1
            self._notify(st)

    def ready(self, actor_id: int) -> None:
        """The backend says actor ``actor_id`` has started (its pool times start-ups)."""
        for pool in self.pools.values():
            pool.ready(actor_id)

    def all_busy(self, index: int) -> bool:
        """True when stage ``index`` is an actor stage whose every actor has a task (a
        new one would queue behind another).

        >>> ActorStages(None, ResourceLedger(num_cpus=1)).all_busy(0)
        False
        """
        pool = self.pools.get(index)
        return pool is not None and all(a.in_flight for a in pool.actors.values())

    def count(self, index: int) -> int:
        """Live actors of stage ``index`` (0 for a task stage)."""
        return len(self.pools[index].actors) if index in self.pools else 0

    def _starter(self, st: StageState):
        def start(actor) -> None:
            env = {"CUDA_VISIBLE_DEVICES": actor.alloc.cuda_visible_devices()}
            self.backend.place_actor(actor.actor_id, actor.alloc.node)
            self.backend.start_actor(st.index, actor.actor_id, env)
            self._notify(st)

        return start

    def _stopper(self, st: StageState):
        def stop(actor) -> None:
            self.backend.stop_actor(actor.actor_id)
            self._notify(st)

        return stop

    def _notify(self, st: StageState) -> None:
        count = self.count(st.index)
        st.stats.actors_peak = max(st.stats.actors_peak, count)
        for obs in self.observers:
            obs.on_actor_change(st.index, st.stage.name, count)


__all__ = ["ActorStages"]
