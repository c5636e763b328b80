"""From a logical plan to a running executor: optimize, plan, pick the backend."""

from __future__ import annotations

from dataclasses import replace

from streambatch.executor.backends import backend_class
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.streaming import StreamingExecutor
from streambatch.operators.logical import LogicalOp
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import plan_stages


def build_executor(plan: LogicalOp, options: ExecutionOptions, backend: str = "local",
                   lineage=None, done: dict | None = None) -> StreamingExecutor:
    """An executor for ``plan`` (nothing runs until its ``run()`` is iterated). ``done``
    (per source ordinal, the pieces a resumed write has already) is left out of the reads.

    >>> from streambatch.operators import logical as L
    >>> from streambatch.connectors.memory import RangeSource
    >>> ex = build_executor(L.Read(RangeSource(5), "Range"), ExecutionOptions(num_cpus=1))
    >>> sum(p.rows for p in ex.run())
    5
    """
    # The budget is read from free RAM once per plan (planner and executor both use it)
    options = replace(options, memory_budget=options.resolved_memory_budget())
    stages = plan_stages(optimize(plan), options, done)
    cls = backend_class(backend)
    return StreamingExecutor(stages, cls.from_options(options), options, observers_for(options),
                             lineage)


def plan_fingerprint(plan: LogicalOp) -> str:
    """A short hash of the plan's shape, to check that a resumed job runs the same plan.

    >>> from streambatch.operators import logical as L
    >>> len(plan_fingerprint(L.Read(None, "Range")))
    16
    """
    import hashlib

    from streambatch.operators.logical import render

    return hashlib.sha256(render(plan).encode()).hexdigest()[:16]


def observers_for(options: ExecutionOptions) -> list:
    """The observers the options ask for: a Chrome trace file, progress output.

    >>> [type(o).__name__ for o in observers_for(ExecutionOptions(trace_path="t.json"))]
    ['TraceRecorder']
    """
    observers = []
    if options.trace_path:
        from streambatch.executor.trace import TraceRecorder

        observers.append(TraceRecorder(options.trace_path))
    if options.progress:
        from streambatch.executor.progress import ProgressReporter

        observers.append(ProgressReporter())
    return observers
