"""Actors still starting (a model's load) and started ones: a task goes where it starts
soonest (backends say when an actor has started: ActorReady), and a started actor is
not stopped for idleness while tasks wait on actors that are still starting (sweep seed 652: the one warm actor of a pool with a 5 s
start-up was stopped while six tasks queued on three cold ones; 39% -> 45% of the
optimum)."""

from __future__ import annotations

from streambatch.executor import clock
from streambatch.executor.actor_pool import ActorPool
from streambatch.executor.backends.base import Node
from streambatch.executor.contract import Resources, TaskStage
from streambatch.executor.nodes import NodeLedger
from streambatch.executor.placement import Placement
from streambatch.executor.resources import ResourceLedger
from streambatch.executor.stage_state import StageState

STAGE = TaskStage("MapBatches(Model)", upstream=(0,), resources=Resources(num_cpus=0, num_gpus=1))


def test_the_start_up_is_timed_when_the_backend_says_an_actor_is_ready():
    """An actor given a task as it started: the start-up is the time to its ActorReady,
    and its first task is timed from then."""
    ledger = ResourceLedger(num_cpus=4, num_gpus=4)
    pool = ActorPool(1, STAGE, (1, 4), depth=2)
    with clock.use(lambda: 1.0):
        pool._add(ledger, lambda actor: None)
        actor_id = next(iter(pool.actors))
        pool.task_started(actor_id)
    with clock.use(lambda: 6.0):
        pool.ready(actor_id)
    with clock.use(lambda: 6.5):
        pool.task_ended(actor_id)
    assert (pool.task_s, pool.startup_s) == (0.5, 5.0)


def test_without_a_ready_report_an_actor_counts_as_started_at_its_first_finished_task():
    """A backend that sends no ActorReady: the first task (start-up included) is not a
    task time; the next one is."""
    ledger = ResourceLedger(num_cpus=4, num_gpus=4)
    pool = ActorPool(1, STAGE, (1, 4), depth=2)
    with clock.use(lambda: 0.0):
        pool._add(ledger, lambda actor: None)
    actor_id = next(iter(pool.actors))
    for start, end in ((0.0, 5.5), (5.5, 6.0)):
        with clock.use(lambda t=start: t):
            pool.task_started(actor_id)
        with clock.use(lambda t=end: t):
            pool.task_ended(actor_id)
    assert (pool.task_s, pool.startup_s, pool.actors[actor_id].ready) == (0.5, 0.0, True)


def placement_for(pool: ActorPool) -> tuple[Placement, list[StageState]]:
    states = [StageState(0, TaskStage("Read"), 1), StageState(1, STAGE, None)]
    return Placement(NodeLedger([Node(4, 4)]), {1: pool}, {}, 2**40), states


def started_and_starting(warm_in_flight: int) -> ActorPool:
    """A pool whose start-up is known to be 5 s and a task 0.5 s: one started actor with
    ``warm_in_flight`` tasks, and one that started at 10 s and has not finished a task."""
    ledger = ResourceLedger(num_cpus=4, num_gpus=4)
    pool = ActorPool(1, STAGE, (1, 4), depth=2)
    pool.task_s, pool.startup_s = 0.5, 5.0
    for started in (0.0, 10.0):
        with clock.use(lambda t=started: t):
            pool._add(ledger, lambda actor: None)
    warm = next(iter(pool.actors.values()))
    warm.ready, warm.tasks_done, warm.in_flight = True, 3, warm_in_flight
    return pool


def test_a_task_waits_for_a_started_actor_that_gets_to_it_before_a_starting_one_is_up():
    pool = started_and_starting(warm_in_flight=2)  # full: its next free slot in 1 s
    placement, states = placement_for(pool)
    with clock.use(lambda: 10.5):  # the other is up at 15 s
        assert placement.place(states, states[1], [], 0) is None


def test_a_task_goes_to_a_starting_actor_once_that_is_up_sooner():
    pool = started_and_starting(warm_in_flight=2)
    placement, states = placement_for(pool)
    cold = list(pool.actors)[1]
    with clock.use(lambda: 14.9):  # up in 0.1 s, the started one frees a slot in 1 s
        assert placement.place(states, states[1], [], 0) == (None, cold)


def test_a_started_actor_with_room_gets_the_task_before_an_idle_starting_one():
    pool = started_and_starting(warm_in_flight=1)
    placement, states = placement_for(pool)
    warm = list(pool.actors)[0]
    with clock.use(lambda: 10.5):
        assert placement.place(states, states[1], [], 0) == (None, warm)


def test_without_a_measured_task_time_the_least_loaded_actor_gets_the_task():
    """Before a task was timed on a started actor, its queue says nothing of when it
    frees: the least loaded actor gets the task, as before any measure."""
    pool = started_and_starting(warm_in_flight=1)
    pool.task_s = 0.0
    placement, states = placement_for(pool)
    cold = list(pool.actors)[1]
    with clock.use(lambda: 10.5):
        assert placement.place(states, states[1], [], 0) == (None, cold)


def test_a_started_actor_idle_past_its_timeout_stays_while_another_still_starts():
    ledger = ResourceLedger(num_cpus=4, num_gpus=4)
    pool = ActorPool(1, STAGE, (1, 4), depth=2, idle_timeout_s=1.0)
    with clock.use(lambda: 0.0):
        pool._add(ledger, lambda actor: None)
        pool._add(ledger, lambda actor: None)
    warm, cold = pool.actors.values()
    warm.ready, warm.tasks_done, warm.idle_since = True, 1, 0.0
    cold.in_flight = 1  # queued on an actor that is still starting
    stopped: list[int] = []
    with clock.use(lambda: 5.0):
        pool.scale(ledger, backlog_tasks=1, start=lambda a: None,
                   stop=lambda a: stopped.append(a.actor_id))
    assert stopped == [] and len(pool.actors) == 2
    cold.ready = True  # it has started: the idle one may go now
    with clock.use(lambda: 5.0):
        pool.scale(ledger, backlog_tasks=1, start=lambda a: None,
                   stop=lambda a: stopped.append(a.actor_id))
    assert stopped == [warm.actor_id]
