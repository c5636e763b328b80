"""A task worker under a loose budget keeps its freed memory for the next task (no
fresh page faults batch after batch), counts it in the next task's working memory (the
task works in it without raising the process's peak), and gives it back once idle;
under a tight budget it keeps about nothing."""

from __future__ import annotations

import multiprocessing

import pytest
from streambatch.executor.backends import heap
from streambatch.executor.backends.task_memory import PeakMeter

MIB = 1 << 20


def _in_child(fn):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=lambda: out.put(fn()))
    proc.start()
    result = out.get(timeout=60)
    proc.join(60)
    return result


def _reuse_then_measure():
    import numpy as np

    heap.keep_heap(heap.ACTOR_HEAP_BYTES)
    first = np.ones(32 * MIB, dtype=np.uint8)  # touched
    del first  # freed into the kept heap
    kept = heap.kept_free_bytes()
    meter = PeakMeter(counts_kept=True)  # a task worker that keeps its heap
    meter.start()
    second = np.ones(32 * MIB, dtype=np.uint8)  # reuses the kept pages
    return kept, meter.peak_bytes() if meter.works else None, int(second[-1])


def _trim_when_idle():
    import numpy as np
    from streambatch.executor.backends.task_memory import _status_kib

    heap.keep_heap()
    block = np.ones(32 * MIB, dtype=np.uint8)
    del block  # freed, kept in the heap: still resident
    before = heap.kept_free_bytes(), _status_kib("RssAnon:")
    here, _there = multiprocessing.Pipe()
    heap.trim_when_idle(here, {}, idle_s=0.0)
    return before, _status_kib("RssAnon:")


def test_a_task_working_in_kept_memory_is_charged_for_it():
    kept, measured, _ = _in_child(_reuse_then_measure)
    if measured is None:
        pytest.skip("this kernel does not reset the peak resident memory")
    assert kept >= 30 * MIB
    assert measured >= 30 * MIB


def test_an_idle_worker_gives_its_kept_memory_back():
    (kept, resident_kib), after_kib = _in_child(_trim_when_idle)
    if resident_kib is None:
        pytest.skip("this kernel does not report RssAnon")
    assert kept >= 30 * MIB
    # the freed pages left the process (glibc may still count them as free: in a heap
    # forked from a long-lived process the block is not at its top, and malloc_trim
    # gives its pages back without shrinking the heap)
    assert resident_kib - after_kib >= 30 * 1024


def test_a_tight_budget_keeps_about_nothing_and_a_loose_one_keeps_the_heap():
    assert heap.heap_bytes_for(96 << 20, 8) == heap.HEAP_BYTES
    assert heap.heap_bytes_for(12 << 30, 2) == 384 << 20
    assert heap.heap_bytes_for(1 << 40, 1) == heap.ACTOR_HEAP_BYTES
