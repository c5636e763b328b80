"""Arrow batches -> torch tensors, zero-copy from Arrow buffers, then to the device.

Numeric columns become ``torch.from_numpy`` over a zero-copy numpy view of the
Arrow buffer; fixed-shape tensor columns (images, embeddings) become n-d
tensors the same way, lists of numbers of one length a 2-d tensor; ragged
tensors and lists of numbers a list of tensors, one per row; other columns
(strings, lists holding nulls) stay Python values. A copy happens only where a conversion needs one (a
dtype change, bit-packed booleans, a column with nulls) or on the way to a
device. For CUDA, tensors are pinned (on the loader's thread) and copied with
``non_blocking=True``. torch is imported only when these functions run.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from streambatch._dependencies import import_optional
from streambatch.connectors.tensors import VARIABLE, tensor_rows
from streambatch.loader.shuffle import numpy_view
from streambatch.operators.batch_format import to_batch


def torch_module():
    """Import torch or fail with the pip command that installs it.

    >>> torch_module().__name__
    'torch'
    """
    return import_optional("torch", extra="torch", what="iter_torch_batches")


def column_numpy(table: pa.Table, name: str):
    """A column as numpy (zero-copy when Arrow allows), or a list for non-numeric data.

    >>> column_numpy(pa.table({"x": [1.5, 2.5]}), "x").tolist()
    [1.5, 2.5]
    >>> column_numpy(pa.table({"s": ["a", None]}), "s")
    ['a', None]
    """
    column = table.column(name)
    view = numpy_view(column)
    if view is not None:
        return view
    kind = column.type
    tensor = isinstance(kind, pa.FixedShapeTensorType) or _numeric(kind) or \
        getattr(kind, "extension_name", None) == VARIABLE or \
        (_is_list(kind) and _numeric(kind.value_type))
    if not tensor:  # strings and other values: a Python list, None for a null
        return column.to_pylist()
    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null value(s); tensors cannot "
                         f"hold nulls: fill them first (e.g. map_batches with "
                         f"pyarrow.compute.fill_null) or drop the column")
    if isinstance(kind, pa.FixedShapeTensorType):
        return np.concatenate([c.to_numpy_ndarray() for c in column.chunks])
    if _numeric(kind):
        return column.to_numpy()
    if getattr(kind, "extension_name", None) == VARIABLE:
        return tensor_rows(column)  # ragged tensors: one array per row
    return _list_rows(column)  # lists of numbers


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or \
        pa.types.is_fixed_size_list(kind)


def _list_rows(column: pa.ChunkedArray):
    """A column of lists of numbers: one 2-d array when every list has the same length
    (token ids of a fixed length: ``(batch, length)``), else one array per row; Python
    lists where a list holds a null.

    >>> _list_rows(pa.chunked_array([[[1, 2], [3, 4]]])).shape
    (2, 2)
    >>> [a.tolist() for a in _list_rows(pa.chunked_array([[[1], [2, 3]]]))]
    [[1], [2, 3]]
    """
    import pyarrow.compute as pc

    flat = pc.list_flatten(column)
    if flat.null_count:  # not tensors: the lists as they are
        return column.to_pylist()
    values = flat.to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths == lengths[0]).all():
        return values.reshape(len(lengths), int(lengths[0]))
    return np.split(values, np.cumsum(lengths)[:-1])


def resolve_device(device):
    """``"auto"`` -> CUDA when available else CPU; strings become ``torch.device``.

    >>> str(resolve_device("cpu")), resolve_device(None)
    ('cpu', None)
    """
    if device is None:
        return None
    torch = torch_module()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_tensors(table: pa.Table, dtypes=None, pin_memory: bool = False) -> dict:
    """A batch as ``{column: tensor}`` (ragged columns: a list of tensors; strings and
    other non-numeric columns stay Python lists).

    ``dtypes`` is one torch dtype for every column or ``{column: dtype}``.

    >>> import torch
    >>> t = to_tensors(pa.table({"x": [1, 2], "y": [0.5, 1.5]}), dtypes={"x": torch.float32})
    >>> t["x"].dtype, t["y"].dtype, tuple(t["x"].shape)
    (torch.float32, torch.float64, (2,))
    """
    torch = torch_module()
    out = {}
    with warnings.catch_warnings():
        # Arrow buffers are read-only and torch ignores that: a tensor over one is copied
        # (as DataLoader's collate stacks new tensors), or a training step's in-place op
        # (batch["x"].sub_(mean)) would change the source's data and every later epoch.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name in table.column_names:
            values = column_numpy(table, name)
            if isinstance(values, list):
                out[name] = _row_tensors(torch, values, dtypes, name)
                continue
            tensor = torch.from_numpy(values)
            want = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
            if want is not None and tensor.dtype != want:
                tensor = tensor.to(want)  # (a new tensor)
            elif pin_memory:
                tensor = tensor.pin_memory()  # (a new tensor)
            elif not values.flags.writeable:
                tensor = tensor.clone()
            if pin_memory and not tensor.is_pinned():
                tensor = tensor.pin_memory()
            out[name] = tensor
    if isinstance(dtypes, dict):
        unknown = sorted(set(dtypes) - set(table.column_names))
        if unknown:
            raise KeyError(f"dtypes names column(s) {unknown} that the batch does not have; "
                           f"columns are {table.column_names}")
    return out


def _row_tensors(torch, values: list, dtypes, name: str) -> list:
    """A ragged column's rows as tensors (strings and other values stay as they are)."""
    if not values or not all(isinstance(v, np.ndarray) for v in values):
        return values
    want = dtypes.get(name) if isinstance(dtypes, dict) else dtypes
    rows = [torch.from_numpy(v) if v.flags.writeable else torch.from_numpy(v).clone()
            for v in values]  # (a read-only Arrow buffer is copied: see to_tensors)
    return [r.to(want) for r in rows] if want is not None else rows


def move_to_device(value, device, non_blocking: bool = True):
    """Move tensors (also inside dicts, lists, tuples) to ``device``.

    >>> import torch
    >>> move_to_device({"x": torch.ones(2), "s": ["a"]}, torch.device("cpu"))["x"].device.type
    'cpu'
    """
    if device is None:
        return value
    torch = torch_module()
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [move_to_device(v, device, non_blocking) for v in value]
        return _rebuild(value, moved)
    return value


class TorchConverter:
    """Turns Arrow batches into what the training step receives, on the loader's thread.

    With ``collate_fn`` the function receives the batch as ``batch_format="numpy"``
    gives it (``{column: numpy array}``, as Ray Data's ``collate_fn`` does) and its
    result (tensors, or dicts/tuples of tensors) is moved to the device;
    otherwise columns become tensors with ``dtypes``. For a CUDA device,
    ``pin_memory`` (default on) pins host tensors so the copy is asynchronous.

    >>> conv = TorchConverter(device="cpu")
    >>> conv(pa.table({"x": [1, 2, 3]}))["x"].tolist()
    [1, 2, 3]
    """

    def __init__(self, dtypes=None, device=None, collate_fn=None, pin_memory=None) -> None:
        self.dtypes, self.collate_fn = dtypes, collate_fn
        self.device = resolve_device(device)
        cuda = self.device is not None and self.device.type == "cuda"
        self.pin = cuda if pin_memory is None else bool(pin_memory) and cuda

    def host(self, table: pa.Table):
        """The batch on the host (pinned when bound for CUDA); runs off the trainer's thread."""
        if self.collate_fn is not None:
            result = self.collate_fn(to_batch(table, "numpy"))  # (as Ray's: numpy arrays,
            # strings as object arrays, a null number as NaN: collate_fn may fill them)
            return _pin(result) if self.pin else result
        return to_tensors(table, self.dtypes, self.pin)

    def to_device(self, value):
        """Start the (non-blocking) copy of a host batch to the device."""
        return move_to_device(value, self.device, non_blocking=self.pin)

    def __call__(self, table: pa.Table):
        return self.to_device(self.host(table))


def _pin(value):
    torch = torch_module()
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: _pin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _rebuild(value, [_pin(v) for v in value])
    return value


def _rebuild(original, items: list):
    if isinstance(original, tuple):
        return type(original)(*items) if hasattr(original, "_fields") else tuple(items)
    return items
