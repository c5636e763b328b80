"""A batch for a rank process, written to shared memory in one copy, mapped by the rank.

A training batch often spans two of the pipeline's blocks (e.g. 64-row batches cut
from files of 200 rows), so it reaches the split server as a table whose columns have
several chunks. Joining them first (``combine_chunks``) and then writing the joined
table as Arrow IPC copies every byte twice, the first time into freshly allocated
memory (page faults, in the driver, beside the decode). Here the fixed-width columns
(integers, floats, fixed-size lists of them, fixed-shape tensors; no nulls), which
hold nearly all the bytes of an image batch, are written chunk by chunk straight into
the file, one region per column: the file's pages take the only copy, and the rank
rebuilds each column as one array over its region of the mapped file (zero-copy, so
a tensor column is one contiguous numpy/torch view). The other columns (strings,
binary, nested, with nulls, booleans, other extension types) travel as one Arrow IPC
stream at the start of the same file. A rank's files are reused (:class:`BatchFiles`):
the rank says when it has dropped a batch, and the next batch is written over it.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> t = pa.concat_tables([pa.table({"x": [1, 2], "s": ["a", "b"]}), pa.table({"x": [3], "s": ["c"]})])
>>> path, layout = write_batch(d, t)
>>> read_batch(path, layout).to_pydict(), os.path.exists(path)
({'x': [1, 2, 3], 's': ['a', 'b', 'c']}, False)
"""

from __future__ import annotations

import mmap
import os
import uuid
import weakref

import numpy as np
import pyarrow as pa

_ALIGN = 64  # each column's region starts on a 64-byte boundary (as Arrow's buffers do)


def flat_type(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` (without nulls) is one contiguous run of fixed-width
    values: integers, floats, fixed-size lists of them, fixed-shape tensors.

    >>> flat_type(pa.int64()), flat_type(pa.list_(pa.int8(), 4)), flat_type(pa.string())
    (True, True, False)
    >>> flat_type(pa.fixed_shape_tensor(pa.uint8(), [2, 2])), flat_type(pa.bool_())
    (True, False)
    """
    if isinstance(kind, pa.FixedShapeTensorType):
        return flat_type(kind.storage_type)
    if isinstance(kind, pa.BaseExtensionType):
        return False
    if pa.types.is_fixed_size_list(kind):
        return flat_type(kind.value_type)
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _leaf(chunk: pa.Array) -> pa.Array | None:
    """The values of ``chunk`` as one flat array of its rows only (offsets applied);
    None when a level holds nulls."""
    if isinstance(chunk, pa.ExtensionArray):
        chunk = chunk.storage
    while True:
        if chunk.null_count:
            return None
        if not pa.types.is_fixed_size_list(chunk.type):
            return chunk
        chunk = chunk.flatten()  # the values of this slice's rows


def _flat_views(column: pa.ChunkedArray) -> list[np.ndarray] | None:
    """Zero-copy numpy views of a flat column's chunks, in order (None: not flat)."""
    if not flat_type(column.type):
        return None
    views = []
    for chunk in column.chunks:
        leaf = _leaf(chunk)
        if leaf is None:
            return None
        views.append(leaf.to_numpy(zero_copy_only=True))
    return views


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def encode(table: pa.Table) -> tuple[list[tuple[int, object]], tuple] | None:
    """Where each part of ``table`` goes in a batch file, without writing anything:
    ``([(offset, bytes-like), ...], layout)``; None when no column is flat or the
    table has no rows (the caller then sends the table as it did before)."""
    if not table.num_rows:
        return None
    views = [_flat_views(c) for c in table.columns]
    if not any(v is not None for v in views):
        return None
    rest = [i for i, v in enumerate(views) if v is None]
    pieces: list[tuple[int, object]] = []
    offset = 0
    if rest:  # the other columns, joined (they are small next to the flat ones)
        sub = table.select(rest).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, sub.schema) as writer:
            writer.write_table(sub)
        ipc = sink.getvalue()
        pieces.append((0, ipc))
        offset = ipc.size
    ipc_bytes = offset
    regions: list[tuple[int, int] | None] = []
    for chunks in views:
        if chunks is None:
            regions.append(None)
            continue
        offset += -offset % _ALIGN
        start = offset
        for view in chunks:
            pieces.append((offset, view))
            offset += view.nbytes
        regions.append((start, offset - start))
    if not offset:  # nothing to map
        return None
    return pieces, (table.schema, table.num_rows, ipc_bytes, tuple(regions))


def _new_file(directory: str) -> tuple[str, int]:
    path = os.path.join(directory, uuid.uuid4().hex + ".batch")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    return path, fd


def _write_pieces(fd: int, pieces: list[tuple[int, object]]) -> None:
    for offset, data in pieces:
        _pwrite_all(fd, data, offset)


def write_batch(directory: str, table: pa.Table) -> tuple[str, tuple] | None:
    """Write ``table`` (any chunking) as a new file (mode 0600) under ``directory``;
    ``(path, layout)`` for :func:`read_batch`, or None (see :func:`encode`)."""
    encoded = encode(table)
    if encoded is None:
        return None
    pieces, layout = encoded
    path, fd = _new_file(directory)
    try:
        _write_pieces(fd, pieces)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path, layout


class BatchFiles:
    """The files that carry one rank's batches, each reused once the rank has dropped
    the batch it last carried (the rank says so, :func:`read_batch` ``on_release``).

    Writing into a file's existing pages costs about a third of writing a new file
    (whose pages tmpfs must allocate and clear, and free again once the rank unlinks
    it). A batch the rank still holds keeps its file: the next batch goes to another
    one, a new file if none is free. ``close()`` removes them all (maps the rank
    still holds stay valid).

    >>> import tempfile
    >>> files = BatchFiles(tempfile.mkdtemp())
    >>> path, layout, slot = files.write(pa.table({"x": [1, 2]}))
    >>> files.write(pa.table({"x": [3]}))[0] == path   # still held by the rank
    False
    >>> files.released([slot]); files.write(pa.table({"x": [4]}))[0] == path
    True
    >>> files.close(); os.path.exists(path)
    False
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: dict[int, tuple[str, int]] = {}  # slot -> (path, fd)
        self.free: list[int] = []

    def write(self, table: pa.Table) -> tuple[str, tuple, int] | None:
        """``table`` written to a free file: ``(path, layout, slot)``; None: see
        :func:`encode`."""
        encoded = encode(table)
        if encoded is None:
            return None
        pieces, layout = encoded
        if self.free:
            slot = self.free.pop()
        else:
            slot = len(self.files)
            self.files[slot] = _new_file(self.directory)
        path, fd = self.files[slot]
        try:
            _write_pieces(fd, pieces)
        except BaseException:
            self.free.append(slot)
            raise
        return path, layout, slot

    def released(self, slots) -> None:
        """The rank dropped the batches it got in ``slots``: their files may be reused."""
        for slot in slots:
            if slot in self.files and slot not in self.free:
                self.free.append(slot)

    def close(self) -> None:
        for path, fd in self.files.values():
            os.close(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.files.clear()
        self.free.clear()


class _Map(mmap.mmap):
    """A read-only map of a batch file (a subclass, so that it can be watched)."""


def _rebuild(kind: pa.DataType, length: int, data: pa.Buffer) -> pa.Array:
    """An array of ``kind`` (a flat type) over the contiguous values in ``data``."""
    if isinstance(kind, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(kind, _rebuild(kind.storage_type, length, data))
    if pa.types.is_fixed_size_list(kind):
        child = _rebuild(kind.value_type, length * kind.list_size, data)
        return pa.Array.from_buffers(kind, length, [None], children=[child])
    return pa.Array.from_buffers(kind, length, [None, data])


def read_batch(path: str, layout: tuple, on_release=None) -> pa.Table:
    """The table :func:`write_batch` or :class:`BatchFiles` wrote to ``path``, over a
    map of the file. Without ``on_release`` the file is unlinked once mapped (the map
    stays valid, the name goes); with it, the file is left to its writer and
    ``on_release()`` is called once nothing holds the table's memory any longer (every
    array, numpy view and tensor over it dropped): the writer may then reuse it."""
    schema, rows, ipc_bytes, regions = layout
    if on_release is None:
        with pa.memory_map(path) as source:
            whole = source.read_buffer()
        os.unlink(path)
    else:
        with open(path, "rb") as handle:
            mapped = _Map(handle.fileno(), 0, access=mmap.ACCESS_READ)
        weakref.finalize(mapped, on_release)
        whole = pa.py_buffer(mapped)
        del mapped  # only the buffers over it hold it now
    rest = iter(())
    if ipc_bytes:
        sub = pa.ipc.open_stream(whole.slice(0, ipc_bytes)).read_all()
        rest = iter(sub.columns)
    columns: list = []
    for field, region in zip(schema, regions, strict=True):
        if region is None:
            columns.append(next(rest))
        else:
            start, size = region
            columns.append(_rebuild(field.type, rows, whole.slice(start, size)))
    return pa.Table.from_arrays(columns, schema=schema)
