"""Undo what a running job holds (worker processes, its shared-memory store) however
the driver exits.

- Normal exit: an ``atexit`` hook runs every registered cleanup.
- SIGINT: Python raises KeyboardInterrupt; unwinding stops the job (and the
  ``atexit`` hook catches whatever a background thread had not finished).
- SIGTERM: its default action ends the process without running Python code, so
  while SIGTERM has that default a handler is installed (only from the main
  thread, the only one allowed to) that runs the cleanups, restores the default
  and sends SIGTERM again: the process still ends "killed by SIGTERM".

A hook belongs to the process that registered it: a forked worker that inherits
the registry (and the handler) never runs its driver's hooks.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import threading
from collections.abc import Callable

_HOOKS: dict[int, tuple[int, Callable[[], object]]] = {}
_IDS = itertools.count()
_LOCK = threading.Lock()
_ATEXIT_PID: int | None = None


def at_exit(fn: Callable[[], object]) -> Callable[[], None]:
    """Call ``fn()`` when the process exits or gets SIGTERM, unless the returned
    function is called first (the work ended normally).

    >>> calls = []
    >>> forget = at_exit(lambda: calls.append("cleaned"))
    >>> forget()  # the job ended normally: nothing is left to clean at exit
    >>> calls
    []
    """
    global _ATEXIT_PID
    with _LOCK:
        if _ATEXIT_PID != os.getpid():
            atexit.register(run_exit_hooks)
            _ATEXIT_PID = os.getpid()
        key = next(_IDS)
        _HOOKS[key] = (os.getpid(), fn)
    install_sigterm_handler()
    return lambda: _forget(key)


def _forget(key: int) -> None:
    _HOOKS.pop(key, None)


def run_exit_hooks() -> None:
    """Run (and forget) every hook this process registered; errors are swallowed, so
    one failed cleanup does not skip the others."""
    me = os.getpid()
    for key, (pid, fn) in list(_HOOKS.items()):
        if pid != me or _HOOKS.pop(key, None) is None:
            continue
        try:
            fn()
        except Exception:  # noqa: BLE001 - best effort while the process goes away
            pass


def install_sigterm_handler() -> bool:
    """Install the cleaning SIGTERM handler if this is the main thread and SIGTERM has
    its default action (a handler the program set itself is left alone); True when
    ours is installed.

    >>> import signal
    >>> previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the program's own choice
    >>> install_sigterm_handler()
    False
    >>> _ = signal.signal(signal.SIGTERM, previous)
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return True
    if current != signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _on_sigterm)
    return True


def _on_sigterm(signum, frame) -> None:
    run_exit_hooks()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


__all__ = ["at_exit", "install_sigterm_handler", "run_exit_hooks"]
