"""The current context: backend choice, resources and execution options."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from streambatch.executor.backends import backend_class
from streambatch.executor.options import ExecutionOptions, LocalOptions, RayOptions
from streambatch.validate import byte_size

# init() keywords that belong to one backend's options object (typed, not a loose dict)
_BACKEND_FIELDS = {"worker_start_method": ("local", LocalOptions),
                   "worker_mode": ("local", LocalOptions),
                   "address": ("ray", RayOptions)}


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

    @property
    def enable_progress_bars(self) -> bool:
        """Ray Data's switch: False turns progress output off; True (the default) shows
        it where it can be seen, on a terminal (``execution_options.progress`` None).
        ``init(progress=True)`` forces it on, into a log or pipe too.

        >>> ctx = DataContext()
        >>> ctx.enable_progress_bars, ctx.execution_options.progress
        (True, None)
        >>> ctx.enable_progress_bars = False
        >>> ctx.enable_progress_bars, ctx.execution_options.progress
        (False, False)
        """
        return self.execution_options.progress is not False

    @enable_progress_bars.setter
    def enable_progress_bars(self, value: bool) -> None:
        if not value:
            self.execution_options.progress = False
        elif self.execution_options.progress is False:
            self.execution_options.progress = None


def init(num_cpus: int | None = None, num_gpus: float | None = None,
         resources: dict | None = None, memory_budget: int | str | None = None,
         backend: str = "local", trace: str | None = None, progress: bool | None = None,
         **options) -> DataContext:
    """Declare the backend's logical resources and how datasets run. Calling it again
    reconfigures.

    Defaults: every detected core, every detected CUDA device, half the available
    memory. ``memory_budget`` is bytes or a size such as ``"2GB"`` / ``"512MiB"`` (the
    strings ``--memory-budget`` takes). Logical GPUs may be declared on a machine without one (GPU stages then
    run on the CPU). ``trace`` writes a Chrome/Perfetto timeline of every task;
    ``progress`` prints per-stage progress: None (the default) when stderr is a
    terminal, True always (plain lines in a log or pipe), False never (or
    ``DataContext.get_current().enable_progress_bars = False``). ``options`` are further
    :class:`ExecutionOptions` fields (``preserve_order``, ``scheduler``...), or
    backend options: ``worker_start_method`` / ``worker_mode`` (or ``local=``
    :class:`LocalOptions`) and ``address`` (or ``ray=`` :class:`RayOptions`).
    ``backend="ray", address="auto"`` (or ``"ray://host:10001"``) runs on an
    existing Ray cluster, whose resources then cap what is declared here.

    >>> ctx = init(num_cpus=2, num_gpus=1, memory_budget=512 * 2**20)
    >>> ctx.execution_options.num_cpus, ctx.execution_options.num_gpus, ctx.backend
    (2, 1, 'local')
    >>> init(memory_budget="1GB").execution_options.memory_budget
    1000000000
    >>> init(memory_budget="1 gigabyte")
    Traceback (most recent call last):
    ...
    ValueError: init(memory_budget='1 gigabyte') is not a size; expected e.g. 2GB, 512MiB or a positive number of bytes
    >>> init(backend="spark")
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'spark'; expected one of: local, ray
    """
    backend_class(backend)
    if options.get("address") and backend != "ray":
        raise ValueError(f"init(address={options['address']!r}) needs backend='ray'")
    options = _backend_options(options)
    fields = ExecutionOptions.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"init() got unknown option(s) {unknown}; expected any of: "
                        f"{sorted(set(fields) | set(_BACKEND_FIELDS))}")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and value < 0:
            raise ValueError(f"init({name}={value!r}): must be >= 0")
    if memory_budget is not None:
        memory_budget = byte_size(memory_budget, f"init(memory_budget={memory_budget!r})")
    ctx = DataContext.get_current()
    ctx.backend = backend
    ctx.execution_options = ExecutionOptions(
        num_cpus=num_cpus, num_gpus=num_gpus, resources=dict(resources or {}),
        memory_budget=memory_budget, trace_path=trace, progress=progress, **options)
    if backend != "local" or ctx.execution_options.local.worker_start_method != "forkserver":
        from streambatch.executor.backends.zygote import stop_unused_zygote

        stop_unused_zygote()  # started at import; these settings start no worker from it
    return ctx


def _backend_options(options: dict) -> dict:
    """``options`` with the backend-specific keywords (``worker_start_method``,
    ``worker_mode``; ``address``) gathered into the typed ``local=`` / ``ray=`` option
    objects (which may also be passed whole: ``init(ray=RayOptions(max_retries=2))``).

    >>> _backend_options({"address": "auto", "preserve_order": True})
    {'preserve_order': True, 'ray': RayOptions(address='auto', max_retries=0)}
    """
    out = {k: v for k, v in options.items() if k not in _BACKEND_FIELDS}
    for group, cls in (("local", LocalOptions), ("ray", RayOptions)):
        given = {k: v for k, v in options.items() if _BACKEND_FIELDS.get(k, ("",))[0] == group}
        if given:
            base = out.get(group) or cls()
            out[group] = replace(base, **given)
    return out
