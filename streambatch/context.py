"""The current context: backend choice, resources and execution options."""

from __future__ import annotations

from dataclasses import dataclass, field

from streambatch.executor.backends import backend_class
from streambatch.executor.options import ExecutionOptions


@dataclass
class DataContext:
    """Settings that every execution in this process uses.

    >>> ctx = DataContext.get_current()
    >>> isinstance(ctx.execution_options, ExecutionOptions)
    True
    """

    backend: str = "local"
    execution_options: ExecutionOptions = field(default_factory=ExecutionOptions)

    _current = None

    @classmethod
    def get_current(cls) -> DataContext:
        """The process-wide context (created on first use)."""
        if cls._current is None:
            cls._current = cls()
        return cls._current

    @property
    def target_partition_bytes(self) -> int:
        """Target size of output partitions."""
        return self.execution_options.target_partition_bytes

    @target_partition_bytes.setter
    def target_partition_bytes(self, value: int) -> None:
        self.execution_options.target_partition_bytes = value


def init(num_cpus: int | None = None, memory_budget: int | None = None,
         backend: str = "local", **options) -> DataContext:
    """Configure where and how datasets run. Calling it again reconfigures.

    ``options`` are further :class:`ExecutionOptions` fields (``preserve_order``,
    ``target_partition_bytes``, ``no_progress_timeout_s``...).

    >>> ctx = init(num_cpus=2, memory_budget=512 * 2**20)
    >>> ctx.execution_options.num_cpus, ctx.backend
    (2, 'local')
    >>> init(backend="spark")
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'spark'; expected one of: local
    """
    backend_class(backend)
    fields = ExecutionOptions.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"init() got unknown option(s) {unknown}; expected any of: {sorted(fields)}")
    ctx = DataContext.get_current()
    ctx.backend = backend
    ctx.execution_options = ExecutionOptions(num_cpus=num_cpus, memory_budget=memory_budget,
                                             **options)
    return ctx
