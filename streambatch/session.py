"""The session: the one place that turns a logical plan into a running execution.

It optimizes the plan, asks the planner for physical stages (the contract types of
``streambatch.executor.contract``), picks the backend the context names and builds
the streaming executor with its observers (trace, progress). The plan layer never
builds or feeds the runtime, and the executor never sees a logical operator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from streambatch.executor.backends import backend_class
from streambatch.executor.contract import Stage
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.streaming import StreamingExecutor
from streambatch.operators.logical import LogicalOp
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import PlanSettings, plan_stages


@dataclass(frozen=True)
class Session:
    """How executions run: the options and the backend's name.

    >>> from streambatch.operators import logical as L
    >>> from streambatch.connectors.memory import RangeSource
    >>> ex = Session(ExecutionOptions(num_cpus=1)).executor(L.Read(RangeSource(5), "Range"))
    >>> sum(p.rows for p in ex.run())
    5
    """

    options: ExecutionOptions
    backend: str = "local"

    @classmethod
    def current(cls) -> Session:
        """The session of the process's current :class:`~streambatch.DataContext`."""
        from streambatch.context import DataContext

        ctx = DataContext.get_current()
        return cls(ctx.execution_options, ctx.backend)

    def with_options(self, **changes) -> Session:
        """The same session with some execution options changed."""
        return replace(self, options=replace(self.options, **changes))

    def plan_settings(self) -> PlanSettings:
        """What the planner needs of these options."""
        return PlanSettings(num_cpus=self.options.resolved_num_cpus(),
                            partition_bytes=self.options.partition_bytes(),
                            worker_mode=self.options.local.worker_mode)

    def stages(self, plan: LogicalOp, done: dict | None = None) -> list[Stage]:
        """The physical stages of ``plan`` (optimized first)."""
        return plan_stages(optimize(plan), self.plan_settings(), done)

    def executor(self, plan: LogicalOp, listener=None,
                 done: dict | None = None) -> StreamingExecutor:
        """An executor for ``plan`` (nothing runs until its ``run()`` is iterated).
        ``listener`` hears of final outputs and settled reads (a write's sink); ``done``
        (per source ordinal, the pieces a resumed write has already) is left out of the
        reads."""
        # The budget is read from free RAM once per plan (planner and executor both use it)
        session = self.with_options(memory_budget=self.options.resolved_memory_budget())
        stages = session.stages(plan, done)
        if any(getattr(s, "ordered", False) for s in stages):  # a sort: its order is the output
            session = session.with_options(preserve_order=True)
        backend = backend_class(self.backend).from_options(session.options)
        return StreamingExecutor(stages, backend, session.options,
                                 observers_for(session.options), listener)


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
    """The observers the options ask for: a Chrome trace file, progress output
    (``progress`` None, the default: only when stderr is a terminal now).

    >>> opts = ExecutionOptions(trace_path="t.json", progress=False)
    >>> [type(o).__name__ for o in observers_for(opts)]
    ['TraceRecorder']
    """
    observers: list = []
    if options.trace_path:
        from streambatch.executor.trace import TraceRecorder

        observers.append(TraceRecorder(options.trace_path))
    from streambatch.executor.progress import ProgressReporter, progress_enabled

    if progress_enabled(options.progress):
        observers.append(ProgressReporter())
    return observers
