"""The rules that bound what waits between stages, without an engine: a stage holds its
next task while the stage it feeds has enough input waiting (its queue and the tasks
queued on its actors), and its running tasks pause between blocks
(``held_stages`` + ``OutputGate``)."""

from __future__ import annotations

import threading
from collections import deque
from types import SimpleNamespace

from streambatch.executor.accounting import (
    HOLD_FLOOR_BYTES,
    QUEUED_TASKS_PER_SLOT,
    downstream_has_enough,
    held_stages,
    queued_on_actors,
)
from streambatch.executor.contract import TaskStage
from streambatch.executor.output_gate import OutputGate
from streambatch.executor.stage_state import StageState

BLOCK = 2**20  # bytes per block; the consumer's tasks take one block each


def one_slot(st):
    return (1.0, "cpu")


def block(nbytes=BLOCK):
    return SimpleNamespace(nbytes=nbytes, memory_bytes=nbytes, rows=32)


def pipeline(queued: int, on_actor: int = 0, producing: bool = True):
    """Read -> Model (one actor) -> Write; ``queued`` blocks wait for Model, which has
    ``on_actor`` tasks handed to its actor (the first runs, the rest wait there)."""
    read = StageState(0, TaskStage("Read"), 1)
    model = StageState(1, TaskStage("Model", upstream=(0,)), 2)
    write = StageState(2, TaskStage("Write", upstream=(1,)), None)
    model.next_seq, model.bytes_in = 10, 10 * BLOCK  # BLOCK bytes per Model task so far
    model.inputs[0] = deque(block() for _ in range(queued))
    for k in range(on_actor):
        model.running[100 + k] = SimpleNamespace(actor_id=7, inputs=[block()])
    if producing:
        read.running[1] = SimpleNamespace(actor_id=None, inputs=[])
    return [read, model, write]


def test_tasks_queued_on_an_actor_count_as_waiting_input():
    states = pipeline(queued=0, on_actor=3)
    assert queued_on_actors(states[1]) == 2 * BLOCK  # the first one runs
    # 1 block queued + 1 behind the running task on the actor = 2 per slot: enough
    assert QUEUED_TASKS_PER_SLOT == 2
    states = pipeline(queued=1, on_actor=2)
    assert downstream_has_enough(states, states[0], one_slot)
    # without the actor's queue the same stage would have 1 of 2 and let Read go on
    states = pipeline(queued=1, on_actor=1)
    assert not downstream_has_enough(states, states[0], one_slot)


def test_tasks_of_different_actors_each_run_one():
    model = pipeline(queued=0)[1]
    model.running = {5: SimpleNamespace(actor_id=1, inputs=[block()]),
                     6: SimpleNamespace(actor_id=2, inputs=[block()]),
                     7: SimpleNamespace(actor_id=1, inputs=[block(), block()])}
    assert queued_on_actors(model) == 2 * BLOCK


def test_running_producer_is_held_while_its_running_consumer_has_enough():
    states = pipeline(queued=2, on_actor=1)
    assert held_stages(states, one_slot) == {0}


def test_producer_goes_on_while_its_consumer_lacks_input():
    states = pipeline(queued=1, on_actor=1)
    assert held_stages(states, one_slot) == set()
    states = pipeline(queued=3, on_actor=1)  # two slots: 4 blocks wanted, 3 + 0 waiting
    assert held_stages(states, lambda st: (2.0, "cpu")) == set()


def test_producer_goes_on_while_its_consumer_runs_nothing():
    # The consumer may be waiting for the very slot the producer's task holds: holding
    # the producer then could stall the job.
    states = pipeline(queued=5, on_actor=0)
    assert downstream_has_enough(states, states[0], one_slot)  # its next task waits...
    assert held_stages(states, one_slot) == set()  # ...but its running one goes on


def test_stage_with_nothing_running_or_no_task_consumer_is_never_held():
    states = pipeline(queued=5, on_actor=1, producing=False)
    assert held_stages(states, one_slot) == set()
    # the last stage feeds the consumer of the job: never held
    states = pipeline(queued=0)
    states[2].running[9] = SimpleNamespace(actor_id=None, inputs=[])
    assert 2 not in held_stages(states, one_slot)


def test_producer_goes_on_once_the_consumer_finished():
    states = pipeline(queued=5, on_actor=1)
    states[1].finished = True
    assert held_stages(states, one_slot) == set()


def test_gate_pauses_a_task_until_its_stage_is_no_longer_held():
    gate = OutputGate()
    gate.hold({0})
    entered, done = threading.Event(), []

    def task():
        entered.set()
        done.append(gate.wait(0, stopped=lambda: False))

    worker = threading.Thread(target=task)
    worker.start()
    entered.wait()
    assert gate.held(0) and not done
    gate.hold({1})  # another stage now: stage 0's task goes on
    worker.join(5)
    assert not worker.is_alive() and len(done) == 1 and done[0] >= 0.0


def test_gate_lets_tasks_go_when_the_job_stops():
    gate = OutputGate()
    gate.hold({0})
    stop = threading.Event()
    result = []
    worker = threading.Thread(target=lambda: result.append(gate.wait(0, stop.is_set)))
    worker.start()
    stop.set()  # cancelled: the waiting task looks at least every WAKE_S
    worker.join(5)
    assert not worker.is_alive() and len(result) == 1
    gate.release_all()
    assert not gate.held(0)
    assert gate.wait(0, stopped=lambda: False) == 0.0


def test_gate_wait_has_an_optional_limit():
    gate = OutputGate()
    gate.hold({3})
    assert gate.wait(3, stopped=lambda: False, timeout_s=0.01) >= 0.01
    assert gate.held(3)


def test_a_tiny_queue_never_holds_its_producer():
    # W1's model (the bottleneck) feeds parquet writes of ~2 KB each: two of them per
    # write slot queued must not stop the model (it was held 11-26 s of a run so).
    states = pipeline(queued=0, on_actor=1)
    model, write = states[1], states[2]
    write.next_seq, write.bytes_in = 10, 10 * 2048
    write.inputs[1] = deque(block(2048) for _ in range(50))
    write.running[3] = SimpleNamespace(actor_id=None, inputs=[block(2048)])
    assert write.queued_bytes() < HOLD_FLOOR_BYTES
    assert not downstream_has_enough(states, model, one_slot)
    assert 1 not in held_stages(states, one_slot)
    # the same queue in bigger blocks holds it
    write.bytes_in = 10 * BLOCK
    write.inputs[1] = deque(block() for _ in range(2))
    assert downstream_has_enough(states, model, one_slot)
