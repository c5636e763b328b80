"""Pickling Arrow extension types that exist only in Arrow C++.

``arrow.variable_shape_tensor`` (ragged tensors) has no Python class in pyarrow: its
type pickles as its name, and unpickling looks the name up among pyarrow's aliases and
fails ("No type alias for extension<arrow.variable_shape_tensor[...]>"). So a read task
holding such a table could not reach a worker process. :func:`register` makes these
types pickle as the IPC form of a one-field schema, which any pyarrow reads back.

>>> import pickle, pyarrow as pa
>>> register()
>>> field = pa.field("t", pa.struct([("data", pa.list_(pa.int16())),
...                                  ("shape", pa.list_(pa.int32(), 2))]),
...                  metadata={b"ARROW:extension:name": b"arrow.variable_shape_tensor",
...                            b"ARROW:extension:metadata": b"{}"})
>>> typ = pa.ipc.read_schema(pa.py_buffer(pa.schema([field]).serialize())).field("t").type
>>> pickle.loads(pickle.dumps(typ)) == typ
True
"""

from __future__ import annotations

import copyreg


def register() -> None:
    """Pickle C++-only extension types through IPC (once per process; pyarrow loaded)."""
    if _REGISTERED:
        return
    import pyarrow as pa

    copyreg.pickle(pa.lib.BaseExtensionType, _reduce)
    _REGISTERED.append(True)


_REGISTERED: list = []  # (non-empty once registered in this process)


def _reduce(typ) -> tuple:
    import pyarrow as pa

    return _from_ipc, (pa.schema([pa.field("t", typ)]).serialize().to_pybytes(),)


def _from_ipc(data: bytes):
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(data)).field("t").type
