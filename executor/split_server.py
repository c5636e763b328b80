"""streaming_split across processes: the driver serves each rank's batches over a local socket.

Data-parallel ranks usually run in their own processes (``torch.multiprocessing``,
``multiprocessing`` with spawn or fork). A split handle pickled into such a
process (or inherited by a fork) cannot reach the driver's coordinator
directly, so the driver runs a :class:`SplitServer`: a Unix-socket listener
(``multiprocessing.connection``, with a random auth key) whose connection
threads pull one rank's batches from the same coordinator the in-process ranks
use and send them as Arrow IPC streams. A rank asks for one batch at a time,
so a slow rank backpressures the pipeline exactly as a thread would, and the
coordinator's stuck-rank timeout and equal batch counts hold unchanged. An
error in the driver (a stuck rank, a failing UDF) is re-raised in the rank.

Nothing here knows about plans or torch: the server is given ``open_rank(rank,
epoch, options) -> iterator of pyarrow.Table`` by the loader.
"""

from __future__ import annotations

import os
import pickle
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client, Listener

import pyarrow as pa
from streambatch.executor.errors import StreamBatchError

OpenRank = Callable[[int, int, dict], Iterator[pa.Table]]


class SplitConnectionError(StreamBatchError):
    """A rank process lost its connection to the driver that runs the pipeline.

    >>> import pickle
    >>> str(pickle.loads(pickle.dumps(SplitConnectionError("rank 1: gone"))))
    'rank 1: gone'
    """

    def __init__(self, message: str) -> None:
        self._init_args = (message,)
        super().__init__(message)


def table_to_bytes(table: pa.Table) -> pa.Buffer:
    """A table as one Arrow IPC stream buffer.

    >>> bytes_to_table(table_to_bytes(pa.table({"x": [1, 2]})))["x"].to_pylist()
    [1, 2]
    """
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def bytes_to_table(data) -> pa.Table:
    """The table in an Arrow IPC stream (zero-copy over ``data``).

    >>> bytes_to_table(table_to_bytes(pa.table({"s": ["a"]}))).num_rows
    1
    """
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class SplitServer:
    """Serves ranks of one split group to other processes; started on demand.

    >>> server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"r": [rank]})]))
    >>> [t["r"].to_pylist() for t in fetch_rank(server.address, server.authkey, 1, 0, {})]
    [[1]]
    >>> server.close()
    """

    def __init__(self, open_rank: OpenRank) -> None:
        self.open_rank = open_rank
        self.authkey = secrets.token_bytes(32)
        self._dir = tempfile.mkdtemp(prefix="streambatch-split-")
        self.address = os.path.join(self._dir, "split.sock")
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self._closed = False
        self._owner = os.getpid()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="streambatch-split-server")
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except Exception:  # noqa: BLE001 - closed listener, or a client failing auth
                if self._closed:
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="streambatch-split-rank").start()

    def _serve(self, conn) -> None:
        batches = None
        try:
            rank, epoch, options = conn.recv()
            batches = self.open_rank(rank, epoch, options)
            while conn.recv() == "next":
                try:
                    table = next(batches)
                except StopIteration:
                    conn.send(("end", None))
                    return
                conn.send(("batch", None))
                conn.send_bytes(table_to_bytes(table))
        except (EOFError, OSError):
            return  # the rank went away: closing its iterator marks it closed
        except BaseException as exc:  # noqa: BLE001 - re-raised in the rank
            try:
                conn.send(("error", _picklable(exc)))
            except (EOFError, OSError):
                pass
        finally:
            if batches is not None and hasattr(batches, "close"):
                batches.close()
            conn.close()

    def close(self) -> None:
        """Stop accepting ranks and remove the socket (only in the process that made it)."""
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        try:
            Client(self.address, family="AF_UNIX", authkey=self.authkey).close()  # wake accept
        except OSError:
            pass
        self._listener.close()
        for path in (self.address,):
            if os.path.exists(path):
                os.unlink(path)
        os.rmdir(self._dir) if os.path.isdir(self._dir) else None


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - send what can cross the process boundary
        return StreamBatchError(f"{type(exc).__name__}: {exc}")


def fetch_rank(address: str, authkey: bytes, rank: int, epoch: int,
               options: dict) -> Iterator[pa.Table]:
    """One rank's batches for ``epoch``, fetched from the driver's :class:`SplitServer`.

    >>> server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"e": [epoch]})] * 2))
    >>> [t["e"][0].as_py() for t in fetch_rank(server.address, server.authkey, 0, 3, {})]
    [3, 3]
    >>> server.close()
    """
    try:
        conn = Client(address, family="AF_UNIX", authkey=authkey)
    except OSError as exc:
        raise SplitConnectionError(
            f"streaming_split rank {rank}: cannot reach the driver process at {address} "
            f"({exc}). The process that called streaming_split() runs the pipeline and must "
            f"stay alive while the ranks iterate") from exc
    try:
        conn.send((rank, epoch, options))
        while True:
            conn.send("next")
            try:
                kind, value = conn.recv()
                if kind == "batch":
                    data = conn.recv_bytes()
            except EOFError as exc:
                raise SplitConnectionError(
                    f"streaming_split rank {rank}: the driver process closed the connection "
                    f"in epoch {epoch} (did it exit or crash?)") from exc
            if kind == "batch":
                yield bytes_to_table(data)
                continue
            if kind == "end":
                return
            raise value
    finally:
        conn.close()
