"""Errors the executor raises: each names what failed, where, and what to do. (The
base class and the errors of user code inside a task are in the contract module.)"""

from __future__ import annotations

import pickle

from streambatch.executor.contract import StreamBatchError


class UserCodeError(StreamBatchError):
    """A user function raised; names the stage, the partition, the row and the cause.

    >>> err = UserCodeError("Map(f)", "partition 2", "row 5: {'x': 1}", "ValueError: boom", "Traceback...")
    >>> print(str(err).splitlines()[0])
    stage 'Map(f)' failed on partition 2, row 5: {'x': 1}: ValueError: boom
    """

    def __init__(self, stage: str, partition: str, row: str | None, error: str,
                 traceback_text: str) -> None:
        where = f"{partition}, {row}" if row else partition
        self._init_args = (stage, partition, row, error, traceback_text,)
        super().__init__(
            f"stage '{stage}' failed on {where}: {error}\n"
            f"Fix the function (or its input) and run again.\n"
            f"Original traceback (from the worker):\n{traceback_text}"
        )
        self.stage, self.partition, self.row, self.error = stage, partition, row, error


_AS_CAUSE: dict[type, type] = {}  # cause type -> its UserCodeError subclass


def user_code_error(stage: str, partition: str, row: str | None, error: str,
                    traceback_text: str, original: BaseException | None) -> UserCodeError:
    """The UserCodeError for a user function that raised ``original``; also an instance
    of ``original``'s type where it can be (as Ray Data's task errors are), so
    ``except ValueError`` catches a UDF's ValueError. Chained to ``original``.

    >>> err = user_code_error("Map(f)", "partition 0", None, "KeyError: 'x'", "", KeyError("x"))
    >>> isinstance(err, KeyError), isinstance(err, UserCodeError), str(err).splitlines()[0]
    (True, True, "stage 'Map(f)' failed on partition 0: KeyError: 'x'")
    """
    err = UserCodeError(stage, partition, row, error, traceback_text)
    cause = type(original) if isinstance(original, Exception) else None
    if cause is not None and not issubclass(cause, (StreamBatchError, StopIteration)):
        err = _as_cause(err, cause, original)
    err.__cause__ = original
    return err


def _as_cause(err: UserCodeError, cause: type, original) -> UserCodeError:
    """``err`` as an instance of a UserCodeError subclass that also derives from ``cause``,
    with ``original``'s attributes (``err`` itself where Python cannot combine the two;
    a StopIteration never: raised through a generator it would become a RuntimeError)."""
    try:
        cls = _AS_CAUSE.get(cause)
        if cls is None:
            cls = type(f"UserCodeError[{cause.__name__}]", (UserCodeError, cause), {
                "__module__": __name__,
                "__str__": lambda self: str(self.args[0]) if self.args else "",
                "__reduce__": _reduce_typed})
            _AS_CAUSE[cause] = cls
        typed = cls.__new__(cls, *err.args)
        typed.args = err.args
        typed.__dict__.update(getattr(original, "__dict__", {}))
        typed.__dict__.update(err.__dict__)
        return typed
    except TypeError:  # a layout Python cannot combine, or a final class
        return err


def _reduce_typed(err) -> tuple:
    """Pickle a typed UserCodeError as itself (a streaming_split rank in another process
    gets ``UserCodeError[ValueError]``, which ``except ValueError`` catches), or as a
    plain UserCodeError where its cause's type cannot travel (a class defined in a
    function).

    >>> import pickle
    >>> err = user_code_error("Map(f)", "partition 0", None, "ValueError: x", "", ValueError("x"))
    >>> again = pickle.loads(pickle.dumps(err))
    >>> isinstance(again, ValueError), isinstance(again, UserCodeError), again.stage
    (True, True, 'Map(f)')
    """
    cause = next(c for c in type(err).__mro__[1:] if c is not UserCodeError
                 and not issubclass(c, StreamBatchError))
    try:
        pickle.loads(pickle.dumps(cause))
    except Exception:  # noqa: BLE001 - any class pickle cannot find by name
        return (UserCodeError, err._init_args)
    return (_typed_again, (err._init_args, cause))


def _typed_again(init_args: tuple, cause: type) -> UserCodeError:
    """A pickled typed UserCodeError, unpickled."""
    return _as_cause(UserCodeError(*init_args), cause, None)


class WorkerDiedError(StreamBatchError):
    """A worker process exited while running a task.

    >>> print(WorkerDiedError("Read->Map", "partition 0", -9))
    worker running stage 'Read->Map' on partition 0 was killed by signal 9; if the machine ran out of memory, lower the memory budget or the batch size
    >>> print(WorkerDiedError("Read->Map", "partition 0", None))  # Ray reports no code
    worker running stage 'Read->Map' on partition 0 died without an exit code (killed by a signal, e.g. the out-of-memory killer's SIGKILL, or its node left); if the machine ran out of memory, lower the memory budget or the batch size
    """

    def __init__(self, stage: str, partition: str, exitcode: int | None) -> None:
        self._init_args = (stage, partition, exitcode,)
        memory = "if the machine ran out of memory, lower the memory budget or the batch size"
        if exitcode is None:
            how = ("died without an exit code (killed by a signal, e.g. the out-of-memory "
                   f"killer's SIGKILL, or its node left); {memory}")
        elif exitcode < 0:
            how = f"was killed by signal {-exitcode}; {memory}"
        else:
            how = (f"exited with exit code {exitcode}; the UDF (or a library it calls) ended "
                   "the process: see the worker's output above")
        super().__init__(f"worker running stage '{stage}' on {partition} {how}")
        self.stage, self.partition, self.exitcode = stage, partition, exitcode


class StageStuckError(StreamBatchError):
    """No stage made progress for longer than ``no_progress_timeout_s``.

    >>> "stage 'Map(f)'" in str(StageStuckError("Map(f)", 30.0, "1 task running"))
    True
    """

    def __init__(self, stage: str, timeout_s: float, detail: str) -> None:
        self._init_args = (stage, timeout_s, detail,)
        super().__init__(
            f"no progress for {timeout_s:.0f}s; stuck stage '{stage}' ({detail}). "
            "Raise ExecutionOptions.no_progress_timeout_s if the stage is slow, not stuck."
        )
        self.stage = stage


class UnplaceableError(StreamBatchError):
    """A stage asks for resources the backend can never give it.

    >>> print(UnplaceableError("MapBatches(Model)", "asks for 1 GPU but the backend has 0 GPUs"))
    stage 'MapBatches(Model)' cannot be placed: asks for 1 GPU but the backend has 0 GPUs. Lower the request, or declare more with streambatch.init(num_cpus=..., num_gpus=..., resources={...})
    """

    def __init__(self, stage: str, detail: str) -> None:
        self._init_args = (stage, detail)
        super().__init__(
            f"stage '{stage}' cannot be placed: {detail}. Lower the request, or declare more "
            "with streambatch.init(num_cpus=..., num_gpus=..., resources={...})")
        self.stage = stage


class NonDeterministicError(StreamBatchError):
    """A re-run task produced fewer outputs than its first run already passed on.

    >>> "produced 2 output partitions" in str(NonDeterministicError("Map(f)", "partition 1", 3, 2))
    True
    """

    def __init__(self, stage: str, partition: str, expected: int, got: int) -> None:
        self._init_args = (stage, partition, expected, got)
        super().__init__(
            f"stage '{stage}' is not deterministic: re-running {partition} after a failure "
            f"produced {got} output partitions, but the first run had already passed on "
            f"{expected}. Recovery needs deterministic UDFs: seed random generators and do not "
            "depend on time or external state")
        self.stage = stage


class TooManyErrorsError(StreamBatchError):
    """More rows failed (and were skipped) than ``max_errored_rows`` allows.

    >>> "more than max_errored_rows=10" in str(TooManyErrorsError("Map(f)", 11, 10, "ValueError"))
    True
    """

    def __init__(self, stage: str, errored: int, limit: int, last_error: str) -> None:
        self._init_args = (stage, errored, limit, last_error)
        super().__init__(
            f"stage '{stage}': {errored} rows failed and were sent to the dead letters, more "
            f"than max_errored_rows={limit}; the job is mostly failing, so it stopped. Last "
            f"error: {last_error}. Inspect ds.dead_letters() or raise max_errored_rows")
        self.stage = stage


class BlockLostError(StreamBatchError):
    """A block was lost (e.g. its Ray node left the cluster) and cannot be recomputed.

    >>> print(BlockLostError("Read->Map", "partition 2", "retries are used up"))
    stage 'Read->Map' lost an input block of partition 2 and cannot recompute it: retries are used up. Raise ExecutionOptions.max_task_retries, or keep nodes in the cluster until the job ends
    """

    def __init__(self, stage: str, partition: str, why: str) -> None:
        self._init_args = (stage, partition, why)
        super().__init__(
            f"stage '{stage}' lost an input block of {partition} and cannot recompute it: "
            f"{why}. Raise ExecutionOptions.max_task_retries, or keep nodes in the cluster "
            "until the job ends")
        self.stage = stage


class WorkerSetupError(StreamBatchError):
    """A worker process could not load the job's stages (UDFs travel to workers by
    cloudpickle: a function from a module is imported there by name).

    >>> print(WorkerSetupError("ModuleNotFoundError: No module named 'mymod'", "Traceback..."))
    ... # doctest: +ELLIPSIS
    a worker process could not load the job's UDFs: ModuleNotFoundError: No module named 'mymod'. ...
    """

    def __init__(self, error: str, traceback_text: str) -> None:
        self._init_args = (error, traceback_text)
        super().__init__(
            f"a worker process could not load the job's UDFs: {error}. Functions and classes "
            f"defined in a module are imported by name in each worker: make that module "
            f"importable there (installed, or on PYTHONPATH / sys.path before the job runs), "
            f"or define the UDF in the script itself.\nTraceback (from the worker):\n"
            f"{traceback_text}")
        self.error = error
