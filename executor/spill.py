"""Spilling: blocks an exchange holds while it waits for its whole input, moved to Arrow
IPC files on disk so they stop counting against the memory budget. A spilled block is
read back memory-mapped (zero-copy: the OS pages it in as a reducer reads its slice),
by the driver or any worker process on this machine.

>>> import pyarrow as pa
>>> spiller = Spiller()
>>> ref = spiller.spill(pa.table({"x": [1, 2]}))
>>> ref.read()["x"].to_pylist()
[1, 2]
>>> spiller.close(); import os; os.path.exists(ref.path)
False
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class SpilledRef:
    """A block in an Arrow IPC file, or rows ``start:start+length`` of it (a block
    reference: ``read()``)."""

    path: str
    start: int | None = None
    length: int | None = None
    on_disk = True  # (Partition.memory_bytes: it holds no memory)

    def read(self) -> pa.Table:
        """The block (or its slice), memory-mapped."""
        import pyarrow.ipc as ipc

        with pa.memory_map(self.path) as source:
            table = ipc.open_file(source).read_all()
        return table if self.start is None else table.slice(self.start, self.length)

    def slice(self, start: int, length: int) -> SpilledRef:
        """Rows ``start:start+length`` of this block, in the same file."""
        return SpilledRef(self.path, (self.start or 0) + start, length)

    def delete(self) -> None:
        """Remove the file of a whole block (its readers keep their mapping); a slice
        leaves it, for the other slices: the spiller removes it at the job's end."""
        if self.start is not None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class Spiller:
    """Writes spilled blocks into a private directory (0700) that :meth:`close` removes."""

    def __init__(self, root: str | None = None) -> None:
        self._root = root
        self._dir: str | None = None
        self._ids = itertools.count()
        self.spilled_bytes = 0

    def spill(self, table: pa.Table) -> SpilledRef:
        """Write ``table`` to a new file; its reference."""
        import pyarrow.ipc as ipc

        if self._dir is None:
            remove_orphans(self._root)
            self._dir = tempfile.mkdtemp(prefix=f"streambatch-spill-{os.getpid()}-",
                                         dir=self._root)
        path = os.path.join(self._dir, f"{next(self._ids)}.arrow")
        with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.chmod(path, 0o600)
        self.spilled_bytes += table.nbytes
        return SpilledRef(path)

    def close(self) -> None:
        """Remove every spilled file."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def remove_orphans(root: str | None = None) -> list[str]:
    """Remove the spill directories of drivers that died without cleaning up (killed):
    each is named after its driver's pid. Returns the ones removed.

    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "streambatch-spill-999999999-x"))
    >>> [os.path.basename(p) for p in remove_orphans(root)]
    ['streambatch-spill-999999999-x']
    """
    import glob

    removed = []
    for path in glob.glob(os.path.join(root or tempfile.gettempdir(), "streambatch-spill-*-*")):
        pid = os.path.basename(path).split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's driver
        return True
    return True


def buckets_for(nbytes: int, budget: int, share: float = 0.25) -> int:
    """Buckets an exchange of ``nbytes`` needs for each reduce task's input to hold at
    most ``share`` of the memory budget.

    >>> buckets_for(100, budget=40)
    10
    """
    return -(-nbytes // max(1, int(budget * share)))


def spill_excess(st, backend, spiller: Spiller, budget: int, share: float = 0.25) -> None:
    """Spill the oldest in-memory partitions waiting in stage state ``st`` (an exchange,
    which holds its whole input) to disk while they hold more than ``share`` of the
    budget; only where every worker reads this machine's disk (the local backend)."""
    from dataclasses import replace

    if not backend.can_spill:
        return
    held, limit = st.queued_bytes(), int(budget * share)
    for queue in st.inputs.values():
        for i, part in enumerate(queue):
            if held <= limit:
                return
            if isinstance(part.ref, SpilledRef) or not part.rows:
                continue
            ref = spiller.spill(part.get())
            backend.release(part.ref)
            queue[i] = replace(part, ref=ref)
            held -= part.nbytes
            st.stats.spilled_bytes += part.nbytes
