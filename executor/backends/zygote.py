"""The driver's side of the zygote (``zygote_main``): start it once, ask it for children.

One zygote per driver process, started on first use and kept for later jobs
(a fresh interpreter importing pyarrow and numpy costs ~0.2 s once; a fork from
it ~2 ms). A driver that forks (a user's multiprocessing child) starts its own.

>>> z = zygote()
>>> child = z.fork()  # a clean process waiting for its setup on child.conn
>>> child.kill(); child.join(5)
True
>>> child.exitcode
-9
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

from streambatch.executor.contract import StreamBatchError

_MAX_MESSAGE = 1 << 16
_KEEP_EXITS = 4096  # exit codes kept (a worker's handle caches its own once read)
_ROLE = "STREAMBATCH_PROCESS_ROLE"  # set in the zygote and spawned workers: no early start


class ZygoteError(StreamBatchError):
    """The zygote process could not be started or went away.

    >>> print(ZygoteError("it exited with code 1"))  # doctest: +ELLIPSIS
    the process that starts streambatch's workers failed: it exited with code 1. ...
    """

    def __init__(self, why: str) -> None:
        self._init_args = (why,)
        super().__init__(
            f"the process that starts streambatch's workers failed: {why}. Its error is "
            f"printed above; worker_start_method='spawn' starts each worker on its own.")


class Child:
    """A worker process started from the zygote (or spawned): its pid, its connection,
    and what :class:`multiprocessing.Process` offers the backend."""

    sentinel = None  # its end of ``conn`` closes when it exits: the backend watches that

    def __init__(self, pid: int, conn, exits, key=None) -> None:
        self.pid, self.conn, self._exits = pid, conn, exits
        self._key = pid if key is None else key  # what its exit is reported under
        self._code: int | None = None

    @property
    def exitcode(self) -> int | None:
        """The exit code (negative: the signal that killed it), None while it runs."""
        if self._code is None:
            self._code = self._exits(self._key, 0.0)
        return self._code

    def is_alive(self) -> bool:
        """True until its exit is known."""
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for it to exit; True when it has."""
        if self._code is None:
            self._code = self._exits(self._key, 1e9 if timeout is None else timeout)
        return self._code is not None

    def kill(self) -> None:
        """SIGKILL it (nothing when it has exited already)."""
        if self.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Zygote:
    """A running zygote process and its control socket (thread-safe)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock, self._lock = ours, threading.Lock()
        self._exited: dict[int, int] = {}
        self._forked: dict[int, int] = {}
        self._token = 0
        self.forked_any = False
        try:
            self.proc = subprocess.Popen(_command("main", theirs.fileno()),
                                         pass_fds=[theirs.fileno()], close_fds=True,
                                         env={**os.environ, _ROLE: "zygote"})
        finally:
            theirs.close()

    def fork(self, preload: tuple[str, ...] = ()) -> Child:
        """A new child of the zygote, connected to this process. The zygote first imports
        the streambatch modules loaded here and the installed modules in ``preload``
        (with this process's environment), unless one starts a thread: the zygote then
        exits rather than fork, and that module is left to the workers from then on."""
        mine, its = socket.socketpair()
        try:
            with self._lock:
                self._token += 1
                token, self.forked_any = self._token, True
                request = _request("fork", token, preload)
                socket.send_fds(self._sock, [request], [its.fileno()])
                pid = self._read_until(lambda: self._forked.pop(token, None), 60.0)
        except OSError as err:
            mine.close()
            raise ZygoteError(f"{type(err).__name__}: {err}") from err
        finally:
            its.close()
        if pid is None:
            mine.close()
            raise ZygoteError(self._why_gone())
        from multiprocessing.connection import Connection

        return Child(pid, Connection(mine.detach()), self.exit_code, token)

    def warm(self, preload: tuple[str, ...] = ()) -> None:
        """Have the zygote import now what :meth:`fork` would import first (the
        streambatch modules loaded here, ``preload``), without forking or waiting for
        it: a stage that may move to worker processes later forks them at once."""
        request = _request("warm", 0, preload)
        with self._lock:
            try:
                self._sock.send(request)
            except OSError:  # gone: the next fork starts another
                pass

    def exit_code(self, token: int, timeout: float) -> int | None:
        """The exit code of the child forked for ``token`` once the zygote reported it
        (by token, not pid: a pid may be reused), waiting up to ``timeout`` (the lock
        is taken in short slices: a fork meanwhile is not held up)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if token in self._exited:
                    return self._exited[token]
                left = deadline - time.monotonic()
                read = self._read_one(min(left, 0.05)) if left > 0 else self._read_one(0.0)
            if not read and (left <= 0 or not self.alive()):
                return self._exited.get(token)

    def alive(self) -> bool:
        """True while the zygote runs."""
        return self.proc.poll() is None

    def close(self) -> None:
        """Stop the zygote (its children get SIGKILL)."""
        self._sock.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _read_until(self, found, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            value = found()
            if value is not None:
                return value
            left = deadline - time.monotonic()
            if left < 0 or not self._read_one(min(left, 0.5)) and not self.alive():
                return found()

    def _read_one(self, timeout: float) -> bool:
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_MAX_MESSAGE)
        except OSError:  # a timeout, or the zygote is gone
            return False
        if not data:
            return False
        kind, key, value = pickle.loads(data)
        if kind == "threaded":  # importing ``value`` started a thread: the zygote exits
            _THREADED_IMPORTS.add(value)
            return True
        (self._forked if kind == "forked" else self._exited)[key] = value
        if len(self._exited) > _KEEP_EXITS:  # tokens grow: forget the oldest exits
            for old in sorted(self._exited)[:len(self._exited) - _KEEP_EXITS // 2]:
                del self._exited[old]
        return True

    def _why_gone(self) -> str:
        code = self.proc.poll()
        return "it did not answer in 60 s" if code is None else f"it exited with code {code}"


def _request(kind: str, token: int, preload: tuple[str, ...]) -> bytes:
    """A fork or warm request: what the zygote imports first (the streambatch modules
    loaded here, ``preload`` less the modules whose import starts a thread), with this
    process's environment and path."""
    preload = tuple(m for m in preload if m not in _THREADED_IMPORTS)
    return pickle.dumps((kind, token, _streambatch_modules(), preload, dict(os.environ),
                         driver_sys_path()))


def _streambatch_modules() -> list[str]:
    """The streambatch modules loaded here: the zygote loads them too before forking."""
    return sorted(name for name, module in list(sys.modules.items())
                  if module is not None and name.startswith("streambatch."))


_ZYGOTE: Zygote | None = None
_ZYGOTE_LOCK = threading.Lock()
_THREADED_IMPORTS: set[str] = set()  # modules whose import starts a thread: never preloaded


def _after_fork_in_child() -> None:
    """A process forked from the driver (a user's helper, a DataLoader worker) lets go of
    the driver's zygote: holding its socket would keep it alive after the driver died."""
    global _ZYGOTE, _ZYGOTE_LOCK
    _ZYGOTE_LOCK = threading.Lock()
    if _ZYGOTE is not None:
        try:
            _ZYGOTE._sock.close()
        except OSError:
            pass
        _ZYGOTE = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_early() -> None:
    """Start this process's zygote now, in the background (``import streambatch`` calls
    it): it imports pyarrow and numpy while the driver imports its own, so the first
    job's workers start at once. Not in a zygote or a spawned worker (they import
    streambatch themselves), and not when ``STREAMBATCH_ZYGOTE=lazy`` (it then starts
    when a job first needs a worker process)."""
    global _ZYGOTE
    if os.environ.get("STREAMBATCH_ZYGOTE") == "lazy" or not _looks_like_a_driver():
        return
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None:
            try:
                _ZYGOTE = Zygote()
            except OSError:  # pragma: no cover - it is started again when needed
                pass


def _looks_like_a_driver() -> bool:
    """False in processes that import streambatch to run someone else's tasks: our zygote
    and spawned workers, a multiprocessing child (a DataLoader worker), a Ray worker."""
    import multiprocessing

    if os.environ.get(_ROLE) or multiprocessing.parent_process() is not None:
        return False
    ray_worker = sys.modules.get("ray._private.worker")
    if ray_worker is not None:
        worker = getattr(ray_worker, "global_worker", None)
        if getattr(worker, "mode", None) == getattr(ray_worker, "WORKER_MODE", object()):
            return False
    return True


def stop_unused_zygote() -> None:
    """Stop this process's zygote if it never forked a worker (``init`` chose a backend
    or start method that does not use it); a later job that needs it starts another."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        z = _ZYGOTE
        if z is not None and z.owner == os.getpid() and not z.forked_any:
            _ZYGOTE = None
            z.proc.kill()  # it may be importing still: it would see the socket close late
            z.proc.wait()
            z._sock.close()


def fork_worker(preload: tuple[str, ...] = ()) -> Child:
    """A child of this process's zygote; a zygote that died (killed, hit by a Ctrl-C while
    it started, or exited because a module to preload started a thread) is replaced
    once, not reported."""
    try:
        return zygote().fork(preload)
    except ZygoteError:
        _forget_dead_zygote()
        return zygote().fork(preload)


def warm_zygote(preload: tuple[str, ...] = ()) -> None:
    """Ask this process's zygote (started now if there is none) to import what the
    job's workers need, in the background (:meth:`Zygote.warm`)."""
    try:
        zygote().warm(preload)
    except (OSError, ZygoteError):  # pragma: no cover - the first fork starts another
        pass


def _forget_dead_zygote() -> None:
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is not None:
            _ZYGOTE.proc.poll()
            _ZYGOTE._sock.close()
            _ZYGOTE = None


def zygote() -> Zygote:
    """This process's zygote, started now if there is none (or it died, or it belongs
    to the process this one was forked from)."""
    global _ZYGOTE
    with _ZYGOTE_LOCK:
        if _ZYGOTE is None or _ZYGOTE.owner != os.getpid() or not _ZYGOTE.alive():
            _ZYGOTE = Zygote()
        return _ZYGOTE


def spawn() -> Child:
    """A worker in a fresh interpreter of its own (``worker_start_method="spawn"``)."""
    mine, its = socket.socketpair()
    try:
        proc = subprocess.Popen(_command("run_worker", its.fileno()), pass_fds=[its.fileno()],
                                close_fds=True, env={**os.environ, _ROLE: "worker"})
    finally:
        its.close()

    def exits(pid: int, timeout: float) -> int | None:
        try:
            return proc.wait(timeout) if timeout else proc.poll()
        except subprocess.TimeoutExpired:
            return None

    from multiprocessing.connection import Connection

    return Child(proc.pid, Connection(mine.detach()), exits)


def _command(entry: str, fd: int) -> list[str]:
    """``python -c`` running ``zygote_main.<entry>(fd)`` with this process's sys.path
    (so streambatch, and the modules UDFs come from, import as they do here)."""
    code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "  # the driver's
            f"import sys; sys.path[:0] = {driver_sys_path()!r}; "
            f"from streambatch.executor.backends.zygote_main import {entry}; {entry}({fd})")
    return [sys.executable, "-c", code]


def driver_sys_path() -> list[str]:
    """This process's ``sys.path`` with ``''`` (the working directory: ``python -c``, the
    REPL, notebooks) and relative entries made absolute, for a worker to import by. A
    relative entry this process already imported from also stands for the directory it
    meant then (its finder's absolute path): after an ``os.chdir`` (Hydra makes one) the
    workers still find the modules the driver imported from it.

    >>> import os
    >>> driver_sys_path()[0] == os.getcwd() if sys.path[0] == "" else True
    True
    """
    out: list[str] = []
    for entry in sys.path:
        if os.path.isabs(entry):
            out.append(entry)
            continue
        meant = getattr(sys.path_importer_cache.get(entry), "path", None)
        now = os.path.abspath(entry) if entry else os.getcwd()
        out += [now] if not isinstance(meant, str) or meant == now else [now, meant]
    return out


def zygote_pid() -> int | None:
    """The pid of this process's zygote while it runs, else None. It outlives jobs (it
    is kept for the next one): a check for a job's leftover processes leaves it out.

    >>> zygote_pid() == zygote().proc.pid
    True
    """
    z = _ZYGOTE
    return z.proc.pid if z is not None and z.owner == os.getpid() and z.alive() else None
