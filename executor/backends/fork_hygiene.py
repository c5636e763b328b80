"""What a forked worker must not inherit from its driver's other threads: imports in
progress, and the lock pyarrow holds while it imports pandas lazily.

A worker is forked from the driver while the driver's other threads run (the user's
loop, Arrow's threads, a prefetch thread). A thread that was importing a module at
that moment leaves, in the child, the module half-initialized in ``sys.modules``
and its import lock held by a thread the child does not have: the child's first
import of that module waits forever. The child forgets both, so it imports the
module afresh.

pyarrow imports pandas lazily, the first time an Arrow call might involve it,
under a plain lock of its own. A child forked while a driver thread is inside
that import inherits the lock held, and its first such Arrow call waits forever.
The child releases it (a plain lock may be released by any thread; the thread
that held it does not exist in the child), so its own first call imports afresh.
"""

from __future__ import annotations

import sys
import threading


def forget_imports_in_progress() -> list[str]:
    """Drop half-imported modules and the import locks of threads this process does
    not have (call first thing in a forked child); returns the modules dropped.

    >>> forget_imports_in_progress()  # nothing is being imported in this thread
    []
    """
    import importlib._bootstrap as bootstrap

    dropped = [name for name, module in list(sys.modules.items())
               if getattr(getattr(module, "__spec__", None), "_initializing", False)]
    for name in dropped:
        del sys.modules[name]
    me = threading.get_ident()
    locks = getattr(bootstrap, "_module_locks", {})
    for name, ref in list(locks.items()):
        lock = ref() if callable(ref) else ref
        if lock is None or getattr(lock, "owner", me) not in (me, 0, None):
            locks.pop(name, None)  # the next import of ``name`` makes a fresh lock
    return dropped


def release_pyarrow_pandas_lock() -> bool:
    """Release pyarrow's lazy-pandas-import lock if a thread this process does not have
    holds it (call in a forked child, after ``forget_imports_in_progress``); returns
    whether it was held.

    >>> release_pyarrow_pandas_lock()  # nobody is importing pandas through pyarrow here
    False
    """
    lib = sys.modules.get("pyarrow.lib")
    lock = getattr(getattr(lib, "_pandas_api", None), "_lock", None)
    if lock is None or not lock.locked():
        return False
    lock.release()
    return True


def reseed_generators() -> list[str]:
    """Seed numpy's global generator (``np.random.normal`` and the like) and torch's
    default one afresh from the operating system, where they are imported (call in a
    worker process as it starts); returns those reseeded. A fork copies a generator's
    state: every worker forked from one zygote (or from the driver) would draw the same
    numbers, in every job, as each of Ray Data's fresh worker processes does not (random
    augmentations repeated across partitions and epochs). Python's ``random`` reseeds
    itself after a fork; a UDF that seeds a generator itself still gets its own sequence.

    >>> import numpy as np
    >>> np.random.seed(0); "numpy" in reseed_generators()
    True
    >>> np.random.rand() != np.random.RandomState(0).rand()
    True
    """
    done = []
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
        done.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "seed"):
        torch.seed()
        done.append("torch")
    return done
