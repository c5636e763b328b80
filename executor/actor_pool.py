"""Actor pools: long-lived workers per actor stage, placed on the resource ledger,
scaled between ``(min, max)`` on queued + in-flight work, released when idle."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from streambatch.executor import clock
from streambatch.executor.errors import UnplaceableError
from streambatch.executor.nodes import NodeLedger
from streambatch.executor.resources import Allocation, ResourceLedger

Ledger = ResourceLedger | NodeLedger  # one machine's, or each node's of several


@dataclass
class ActorInfo:
    """One actor: its resources and how many tasks it has queued or running."""

    actor_id: int
    alloc: Allocation
    in_flight: int = 0
    idle_since: float = field(default_factory=clock.now)
    tasks_done: int = 0  # none yet: it may still be starting (importing, loading a model)
    started_at: float = field(default_factory=clock.now)
    ready: bool = False  # its start-up is over (the backend said so, or it finished a task)
    running_since: float | None = None  # when its running task began (None: none runs)

    def wait_s(self, pool: ActorPool) -> float:
        """Seconds until a task handed to it now would start: the tasks before it, and
        for an actor still starting, what is left of the pool's measured start-up."""
        left = 0.0 if self.ready else max(0.0, self.started_at + pool.startup_s - clock.now())
        return left + self.in_flight * pool.task_s


def wanted_actors(backlog_tasks: int, depth: int, low: int, high: int) -> int:
    """Actors wanted for ``backlog_tasks`` (queued + in flight): one per task, within
    ``(low, high)``. The ``depth`` tasks an actor may hold queue behind its running
    one once the pool is at ``high``; sizing the pool by the backlog over that depth
    ran six batches on three of sixteen free GPUs, two after each other on each.

    >>> wanted_actors(0, 2, 1, 4), wanted_actors(3, 2, 1, 4), wanted_actors(50, 2, 1, 4)
    (1, 3, 4)
    """
    return max(low, min(high, backlog_tasks))


class ActorPool:
    """The actors of one stage (executor side; the backend runs the processes).

    >>> ledger = ResourceLedger(num_cpus=4)
    >>> from streambatch.executor.contract import TaskStage
    >>> pool = ActorPool(0, TaskStage("MapBatches(M)"), (1, 3), depth=2)
    >>> started = []
    >>> pool.scale(ledger, backlog_tasks=6, start=lambda a: started.append(a.actor_id),
    ...            stop=lambda a: None)
    >>> len(pool.actors), ledger.free_cpus
    (3, 1.0)
    """

    _ids = itertools.count()

    def __init__(self, stage_index: int, stage, bounds: tuple[int, int], depth: int,
                 idle_timeout_s: float = 1.0) -> None:
        self.stage_index, self.stage = stage_index, stage
        self.low, self.high = bounds
        self.depth, self.idle_timeout_s = depth, idle_timeout_s
        self.actors: dict[int, ActorInfo] = {}
        self.surplus_since: float | None = None  # since when it has more actors than wanted
        self.task_s = 0.0  # a task's time on a started actor (measured, latest)
        self.startup_s = 0.0  # an actor's start-up (measured, latest; 0: not yet)
        self.looks_ahead = False  # the plan's one GPU pool: it starts actors for rows to
        # come, and keeps them through a dip in its backlog (ActorStages._backlog)

    def start_minimum(self, ledger: Ledger, start) -> None:
        """Place ``min`` actors now, or fail naming the stage and what is missing."""
        for _ in range(self.low):
            if not self._add(ledger, start):
                raise UnplaceableError(
                    self.stage.name, f"needs {self.low} actor(s) with "
                    f"{self.stage.resources.describe()} each, but only {len(self.actors)} fit "
                    f"the backend's free resources")

    def _add(self, ledger: Ledger, start) -> bool:
        alloc = ledger.acquire(self.stage.resources)
        if alloc is None:
            return False
        actor = ActorInfo(next(self._ids), alloc)
        self.actors[actor.actor_id] = actor
        start(actor)
        return True

    def scale(self, ledger: Ledger, backlog_tasks: int, start, stop) -> None:
        """Add actors (several at once) up to what the backlog needs; drop idle ones."""
        want = wanted_actors(backlog_tasks, self.depth, self.low, self.high)
        while len(self.actors) < want and self._add(ledger, start):
            pass
        now = clock.now()
        if len(self.actors) <= want:
            self.surplus_since = None
            return
        if self.surplus_since is None:
            self.surplus_since = now
        if self.looks_ahead and now - self.surplus_since <= self.idle_timeout_s:
            return  # GPU actors start slowly (a model's load): a backlog that dips keeps them
        starting = any(a.in_flight and not a.ready for a in self.actors.values())
        for actor in reversed(list(self.actors.values())):  # the newest (least warm) first
            if len(self.actors) <= want:
                break
            if actor.in_flight == 0 and now - actor.idle_since > self.idle_timeout_s \
                    and not (starting and actor.ready):
                self._remove(ledger, actor, stop)

    def release_all(self, ledger: Ledger, stop) -> None:
        """Stop every actor (the stage has no more work) and free its resources."""
        for actor in list(self.actors.values()):
            if actor.in_flight == 0:
                self._remove(ledger, actor, stop)

    def _remove(self, ledger: Ledger, actor: ActorInfo, stop) -> None:
        del self.actors[actor.actor_id]
        ledger.release(actor.alloc)
        stop(actor)

    def forget(self, actor_id: int, ledger: Ledger) -> bool:
        """Remove a dead actor and free its resources; True if it was in the pool."""
        actor = self.actors.pop(actor_id, None)
        if actor is None:
            return False
        ledger.release(actor.alloc)
        return True

    def free_actor(self) -> ActorInfo | None:
        """The least loaded actor with room for another queued task."""
        candidates = [a for a in self.actors.values() if a.in_flight < self.depth]
        return min(candidates, key=lambda a: a.in_flight) if candidates else None

    def in_flight(self) -> int:
        """Tasks queued on or running in this pool's actors."""
        return sum(a.in_flight for a in self.actors.values())

    def task_started(self, actor_id: int) -> None:
        """Count a task handed to an actor."""
        actor = self.actors[actor_id]
        actor.in_flight += 1
        if actor.running_since is None:
            actor.running_since = clock.now()

    def ready(self, actor_id: int) -> None:
        """The backend says the actor has started: time the pool's start-up on it.

        >>> from streambatch.executor.contract import TaskStage
        >>> pool = ActorPool(0, TaskStage("M"), (1, 2), depth=2)
        >>> pool.actors[0] = ActorInfo(0, None, started_at=1.0)
        >>> with clock.use(lambda: 6.0): pool.ready(0)
        >>> pool.startup_s, pool.actors[0].ready
        (5.0, True)
        """
        actor = self.actors.get(actor_id)
        if actor is not None and not actor.ready:
            actor.ready = True
            self.startup_s = clock.now() - actor.started_at
            if actor.in_flight:  # its first task begins now
                actor.running_since = clock.now()

    def task_ended(self, actor_id: int) -> None:
        """Count a finished task, and time it on a started actor (the actor has started,
        if the backend did not say so); an actor with none left starts its idle clock.

        >>> from streambatch.executor.contract import TaskStage
        >>> pool = ActorPool(0, TaskStage("M"), (1, 2), depth=2)
        >>> pool.actors[0] = ActorInfo(0, None, started_at=0.0, ready=True)
        >>> with clock.use(lambda: 1.0): pool.task_started(0); pool.task_started(0)
        >>> with clock.use(lambda: 1.5): pool.task_ended(0)
        >>> with clock.use(lambda: 1.75): pool.task_ended(0)
        >>> pool.task_s, pool.actors[0].idle_since
        (0.25, 1.75)
        """
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        now = clock.now()
        if actor.ready and actor.running_since is not None:
            self.task_s = now - actor.running_since
        actor.ready = True
        actor.in_flight -= 1
        actor.tasks_done += 1
        actor.running_since = now if actor.in_flight else None
        if actor.in_flight == 0:
            actor.idle_since = now
