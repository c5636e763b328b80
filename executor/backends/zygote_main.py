"""The zygote: a clean process that forks the local backend's workers and actors.

The driver starts it once (``python -c``, a fresh interpreter: none of the
driver's threads, locks, Polars pool or CUDA context), it imports pyarrow,
numpy, cloudpickle and the worker loop once, and then forks a child per
request. A child never runs the driver's code by accident: it gets its job
(the stages, cloudpickled, and the driver's environment, working directory and
``sys.path``) over its own connection to the driver (:func:`run_worker`).

Protocol on the control socket (SOCK_SEQPACKET, one pickle per message):
driver -> zygote ``("warm", 0, ...)``: import what a fork would import first, and
answer nothing; ``("fork", token)`` with the child's socket attached; zygote
-> driver ``("forked", token, pid)`` and, when a child ends, ``("exited", pid,
code)`` (negative: killed by that signal). The zygote exits when the driver's
end closes (the driver exited, however it exited); its children get SIGKILL
then (``PR_SET_PDEATHSIG``).

Spawned workers (``worker_start_method="spawn"``) run :func:`run_worker` in a
fresh interpreter of their own, with no zygote.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import socket
import sys
import traceback
import warnings

# The zygote's only other threads are OpenBLAS's and Arrow's allocator's, which
# handle fork; Python 3.12+ would warn about them at every fork.
warnings.filterwarnings("ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning)

PRELOAD = ("numpy", "pyarrow", "pyarrow.ipc", "cloudpickle",
           "streambatch.executor.backends.process_worker")
MAX_MESSAGE = 1 << 16


def main(control_fd: int) -> None:
    """Serve fork requests on ``control_fd`` until the driver goes away."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()  # a child's exit wakes the loop at once
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    while True:
        _report_exits(control)
        watched: list[socket.socket | int] = [control, wake_r]
        ready, _, _ = select.select(watched, [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if control not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
        except OSError:
            data = b""
        if not data:
            os._exit(0)  # the driver exited: no interpreter teardown, its children die now
        _fork_child(control, pickle.loads(data), fds)


def _import_like_the_driver(modules: list[str]) -> None:
    """Import the streambatch modules the driver has loaded (the stages' code), once,
    so that every child has them without importing them itself."""
    import importlib

    for name in modules:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the child imports it, and reports a failure
                pass


_TOKENS: dict[int, int] = {}  # pid of a live child -> the driver's token for it


def _threads() -> int:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("Threads:")))


def _preload(control: socket.socket, modules: tuple[str, ...]) -> None:
    """Import installed modules the job's UDFs use (torch...) once, for every child; an
    import that starts a thread makes this zygote unsafe to fork from: say which, and
    exit (the driver starts another and leaves that module to the workers)."""
    import importlib

    for name in modules:
        if name in sys.modules:
            continue
        before = _threads()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the child imports it, and reports a failure
            continue
        if _threads() > before:
            control.send(pickle.dumps(("threaded", 0, name)))
            os._exit(3)


def _fork_child(control: socket.socket, request: tuple, fds: list[int]) -> None:
    kind, token, modules, preload, environ, sys_path = request
    os.environ.clear()
    os.environ.update(environ)  # imports below see the driver's environment and path of now
    sys.path[:] = sys_path
    _import_like_the_driver(modules)
    _preload(control, preload)
    if kind == "warm":
        for fd in fds:
            os.close(fd)
        return
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        control.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _child(fds[0], zygote)
    for fd in fds:
        os.close(fd)
    _TOKENS[pid] = token
    control.send(pickle.dumps(("forked", token, pid)))


def _report_exits(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        token = _TOKENS.pop(pid, None)
        if token is None:
            continue
        try:
            control.send(pickle.dumps(("exited", token, code)))
        except OSError:
            return


def _child(fd: int, parent: int) -> None:
    """A forked child: die with the zygote, then serve the driver on ``fd``."""
    code = 1
    try:
        _die_with(parent)
        run_worker(fd)
        code = 0
    except SystemExit as exc:  # a UDF's sys.exit(n): the driver reports n, as with fork
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the exit code tells the driver; the text goes to stderr
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with(parent: int) -> None:
    try:  # Linux: SIGKILL this process when its parent (the zygote) exits
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def run_worker(fd: int) -> None:
    """Take the job's setup from the driver on ``fd`` and run the worker loop.

    The setup is ``(environ, cwd, sys_path, stage pickles, store_root, target_bytes,
    heap_bytes, env, actor)`` (the pickles of the stages this worker runs; None for the others). A
    setup that cannot be loaded (a module the UDF needs is missing here) is reported
    as a :class:`WorkerSetupFailed` and the worker exits.
    """
    from multiprocessing.connection import Connection

    import cloudpickle
    from streambatch.executor.backends.base import WorkerSetupFailed, describe_failure, portable
    from streambatch.executor.backends.process_worker import worker_main

    conn = Connection(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        environ, cwd, sys_path, blobs, store_root, target_bytes, heap_bytes, env, actor = \
            conn.recv()
    except (EOFError, OSError):
        return  # the driver went away before sending the job
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = sys_path
    try:
        os.chdir(cwd)
        stages = [None if blob is None else cloudpickle.loads(blob) for blob in blobs]
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        conn.send(WorkerSetupFailed(portable(describe_failure(exc))))
        return
    del blobs
    worker_main(conn, stages, store_root, target_bytes, [], env, actor, heap_bytes)


if __name__ == "__main__":  # pragma: no cover - started by the driver
    if sys.argv[1] == "zygote":
        main(int(sys.argv[2]))
    else:
        run_worker(int(sys.argv[2]))
