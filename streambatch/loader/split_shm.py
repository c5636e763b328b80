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
stream at the start of the same file.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> t = pa.concat_tables([pa.table({"x": [1, 2], "s": ["a", "b"]}), pa.table({"x": [3], "s": ["c"]})])
>>> path, layout = write_batch(d, t)
>>> read_batch(path, layout).to_pydict(), os.path.exists(path)
({'x': [1, 2, 3], 's': ['a', 'b', 'c']}, False)
"""

from __future__ import annotations

import os
import uuid

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


def _write_all(fd: int, data) -> int:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])
    return done


def write_batch(directory: str, table: pa.Table) -> tuple[str, tuple] | None:
    """Write ``table`` (any chunking) as a new file (mode 0600) under ``directory``;
    ``(path, layout)`` for :func:`read_batch`, or None when no column is flat (the
    caller then sends the table as it did before), and for a table of no rows."""
    if not table.num_rows:
        return None
    views = [_flat_views(c) for c in table.columns]
    if not any(v is not None for v in views):
        return None
    rest = [i for i, v in enumerate(views) if v is None]
    path = os.path.join(directory, uuid.uuid4().hex + ".batch")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        offset = 0
        if rest:  # the other columns, joined (they are small next to the flat ones)
            sub = table.select(rest).combine_chunks()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, sub.schema) as writer:
                writer.write_table(sub)
            offset = _write_all(fd, sink.getvalue())
        ipc_bytes = offset
        regions: list[tuple[int, int] | None] = []
        for chunks in views:
            if chunks is None:
                regions.append(None)
                continue
            pad = -offset % _ALIGN
            if pad:
                offset += _write_all(fd, bytes(pad))
            start = offset
            for view in chunks:
                offset += _write_all(fd, view)
            regions.append((start, offset - start))
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return path, (table.schema, table.num_rows, ipc_bytes, tuple(regions))


def _rebuild(kind: pa.DataType, length: int, data: pa.Buffer) -> pa.Array:
    """An array of ``kind`` (a flat type) over the contiguous values in ``data``."""
    if isinstance(kind, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(kind, _rebuild(kind.storage_type, length, data))
    if pa.types.is_fixed_size_list(kind):
        child = _rebuild(kind.value_type, length * kind.list_size, data)
        return pa.Array.from_buffers(kind, length, [None], children=[child])
    return pa.Array.from_buffers(kind, length, [None, data])


def read_batch(path: str, layout: tuple) -> pa.Table:
    """The table :func:`write_batch` wrote to ``path``, over a map of the file (which is
    unlinked once mapped: the map stays valid, the name goes)."""
    schema, rows, ipc_bytes, regions = layout
    with pa.memory_map(path) as source:
        whole = source.read_buffer()
    os.unlink(path)
    rest = iter(())
    if ipc_bytes:
        sub = pa.ipc.open_stream(whole.slice(0, ipc_bytes)).read_all()
        rest = iter(sub.columns)
    columns = []
    for field, region in zip(schema, regions, strict=True):
        if region is None:
            columns.append(next(rest))
        else:
            start, size = region
            columns.append(_rebuild(field.type, rows, whole.slice(start, size)))
    return pa.Table.from_arrays(columns, schema=schema)
