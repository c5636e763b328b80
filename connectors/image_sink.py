"""The image sink: one image file per row, named from a column or by the task.

File names taken from the data keep their sub-directories (``sub/a.png``) and
must be unique: a name that another row of the job, or a file already in the
output directory, has is an error naming it, never a silent overwrite.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasink import FileDatasink, written
from streambatch.connectors.images import require_pillow
from streambatch.connectors.manifest import is_local
from streambatch.connectors.output_dir import safe_relative
from streambatch.connectors.tensors import is_tensor_type, tensor_to_numpy


class ImageSink(FileDatasink):
    """One image file per row from tensor column ``column``; files are named from
    ``filename_column`` when given, else ``part-<job>-<task>-<row>.<format>``.

    >>> import tempfile
    >>> from streambatch.connectors.tensors import tensor_array
    >>> sink = ImageSink(tempfile.mkdtemp() + "/out", column="image"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> t = pa.table({"image": tensor_array(np.zeros((2, 4, 4, 3), np.uint8))})
    >>> len(sink.write([t], Ctx())["path"])
    2
    """

    name = "Images"

    def __init__(self, path: str, *, column: str, file_format: str = "png",
                 filename_column: str | None = None, **kwargs) -> None:
        require_pillow()
        super().__init__(path, **kwargs)
        self.column, self.file_format = column, file_format.lower().lstrip(".")
        self.filename_column = filename_column

    def write(self, blocks, ctx) -> pa.Table:
        """Write each row's image to its own file (temporary name, then a rename that
        never replaces an existing file)."""
        self.use_in_this_process()
        prefix = self.file_prefix(ctx)
        record = _Record(self, f".{prefix}.written")
        record.undo_earlier_attempt()
        files: list[tuple[str, int, int]] = []
        named: dict[str, int] = {}  # file name -> the row written to it
        row = 0
        for table in blocks:
            for array, rel in zip(column_images(self._column(table)),
                                  self._names(table, prefix, row), strict=True):
                self._check_unique(rel, named, row)
                named[rel] = row
                temp = f"{self.path}/.{prefix}-{row:06d}.tmp"
                self._encode(array, rel, temp)
                self.stop_if_abandoned(temp, ctx)
                record.add(rel)
                try:
                    self._commit(temp, rel)
                except FileExistsError:
                    record.drop(rel)  # the file is another task's: never remove it for this one
                    raise
                files.append((f"{self.path}/{rel}", 1, int(array.nbytes)))
                row += 1
        return written(files)

    def _column(self, table: pa.Table) -> pa.ChunkedArray:
        if self.column not in table.column_names:
            raise KeyError(f"write_images: no column {self.column!r}; the columns are "
                           f"{table.column_names}")
        return table.column(self.column)

    def _names(self, table: pa.Table, prefix: str, first_row: int) -> list[str]:
        if not self.filename_column:
            return [f"{prefix}-{first_row + i:06d}.{self.file_format}"
                    for i in range(table.num_rows)]
        names = []
        for value in table.column(self.filename_column).to_pylist():
            rel = safe_relative(str(value), "write_images")
            names.append(rel if "." in rel.rsplit("/", 1)[-1] else f"{rel}.{self.file_format}")
        return names

    def _check_unique(self, rel: str, named: dict, row: int) -> None:
        if rel in named:
            raise FileExistsError(
                f"write_images: rows {named[rel]} and {row} of one partition are both named "
                f"{rel!r} (column {self.filename_column!r}); file names must be unique: add "
                "something unique (an id) to that column")
        if self.fs.exists(f"{self.path}/{rel}"):
            raise _taken(rel, self.filename_column)

    def _encode(self, array: np.ndarray, rel: str, temp: str) -> None:
        buffer = io.BytesIO()
        require_pillow().fromarray(array).save(buffer, format=_pil_format(rel, self.file_format))
        with self.fs.open(temp, "wb") as handle:
            handle.write(buffer.getvalue())

    def _commit(self, temp: str, rel: str) -> None:
        final = f"{self.path}/{rel}"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        if not is_local(self.fs):
            self.fs.mv(temp, final)
            return
        try:
            os.link(temp, final)  # atomic, and never replaces a file another task wrote
        except FileExistsError:
            os.unlink(temp)
            raise _taken(rel, self.filename_column) from None
        os.unlink(temp)


def _taken(rel: str, column: str | None) -> FileExistsError:
    return FileExistsError(
        f"write_images: {rel!r} exists already in the output (another row of this job, or "
        f"a file that was there before, has that name in column {column!r}); file names "
        "must be unique: add something unique (an id) to that column, or write elsewhere")


class _Record:
    """The ``.part-<job>-<key>.written`` list of the files a task committed (relative
    paths), so a retry, an abort or a resume finds files named from the data."""

    def __init__(self, sink: ImageSink, name: str) -> None:
        self.sink, self.path = sink, f"{sink.path}/{name}"
        self.names: list[str] = []

    def undo_earlier_attempt(self) -> None:
        """A retried task first removes what its failed attempt committed."""
        if not self.sink.fs.exists(self.path):
            return
        with self.sink.fs.open(self.path, "r") as handle:
            listed = [line for line in handle.read().splitlines() if line]
        self.sink.out.remove(listed)

    def add(self, rel: str) -> None:
        """List ``rel`` before it is committed (so a crash never hides a committed file)."""
        self.names.append(rel)
        self._save()

    def drop(self, rel: str) -> None:
        """Unlist ``rel`` (its commit found another task's file there)."""
        self.names.remove(rel)
        self._save()

    def _save(self) -> None:
        with self.sink.fs.open(self.path, "w") as handle:
            handle.write("\n".join(self.names))


def _pil_format(name: str, default: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else default
    return {"jpg": "JPEG", "tif": "TIFF"}.get(ext, ext.upper())


def column_images(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Per-row uint8 arrays from a tensor column (or a column of nested lists).

    >>> from streambatch.connectors.tensors import tensor_array
    >>> [a.shape for a in column_images(pa.chunked_array([tensor_array(np.zeros((2, 3, 3)))]))]
    [(3, 3), (3, 3)]
    """
    if is_tensor_type(column.type):
        arrays = tensor_to_numpy(column)
    else:
        arrays = [np.asarray(v) for v in column.to_pylist()]
    return [np.asarray(a).astype(np.uint8, copy=False) for a in arrays]
