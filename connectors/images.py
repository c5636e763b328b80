"""Images: a source decoding files with Pillow into a tensor column ``image``, and a
sink writing one image file per row.

Decoded images are about 20x their (compressed) file size, so read tasks
estimate their in-memory size from the image headers (or from ``size=``),
falling back to 20x the file size.

>>> import tempfile, numpy as np
>>> from PIL import Image
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp()
>>> for i in range(2): Image.fromarray(np.full((4, 6, 3), i, np.uint8)).save(f"{d}/{i}.png")
>>> src = ImageSource(d)
>>> tables = [t for task in src.read_tasks(1, Pushdowns()) for t in task()]
>>> str(tables[0].schema.field("image").type)
'extension<arrow.fixed_shape_tensor[value_type=uint8, shape=[4,6,3]...]>'
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasink import Datasink
from streambatch.connectors.file_based import FileReadError, FileSource
from streambatch.connectors.tensors import is_tensor_type, tensor_array, tensor_to_numpy

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3, "LA": 2, "I": 1, "F": 1}
DECODED_SIZE_FACTOR = 20


def require_pillow():
    """Import Pillow or fail with the pip command that installs it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("read_images/write_images need Pillow: "
                          "pip install 'streambatch[images]'") from exc
    return Image


class ImageSource(FileSource):
    """Image files decoded to ``mode`` (e.g. "RGB", "L"; None keeps each file's mode),
    resized to ``size=(height, width)`` when given.

    The column is a fixed-shape tensor when every image has the same shape
    (always with ``size=``), a variable-shape tensor otherwise; shapes are read
    from the image headers when the tasks are made, in parallel.
    """

    name = "Images"
    who = "read_images"
    suffixes = IMAGE_SUFFIXES
    in_memory_factor = DECODED_SIZE_FACTOR
    error_hint = "the file is not a readable image (corrupt or truncated); remove it or fix it"

    def __init__(self, paths, *, size: tuple[int, int] | None = None, mode: str | None = "RGB",
                 **kwargs) -> None:
        require_pillow()
        super().__init__(paths, **kwargs)
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ValueError(f"read_images: size must be (height, width) > 0, got {size!r}")
        self.size, self.mode = (tuple(size) if size is not None else None), mode
        self._shapes: dict[str, tuple] | None = None
        self.variable = False

    def _shape_for(self, height: int, width: int, mode: str) -> tuple:
        channels = CHANNELS.get(self.mode or mode, 3)
        return (height, width) if channels == 1 else (height, width, channels)

    def shapes(self) -> dict[str, tuple | None]:
        """Decoded shape of every file (from its header; None when unreadable)."""
        if self._shapes is None:
            fs, files, _ = self.listing()
            if self.size is not None:
                shape = self._shape_for(*self.size, self.mode or "RGB")
                self._shapes = {f.path: shape for f in files}
            else:
                with ThreadPoolExecutor(16) as pool:
                    found = pool.map(lambda f: (f.path, self._peek(fs, f.path)), files)
                    self._shapes = dict(found)
            self.variable = len({s for s in self._shapes.values() if s is not None}) > 1
        return self._shapes

    def _peek(self, fs, path: str) -> tuple | None:
        image_mod = require_pillow()
        try:
            with fs.open(path, "rb") as handle, image_mod.open(handle) as img:
                return self._shape_for(img.height, img.width, img.mode)
        except Exception:
            return None  # reported with the file name when the task decodes it

    def read_tasks(self, parallelism, pushdowns):
        """Tasks over the files; shapes are known first (fixed vs variable)."""
        self.shapes()
        return super().read_tasks(parallelism, pushdowns)

    def estimate(self, entry):
        """One row per file; decoded bytes from the header, else 20x the file size."""
        shape = (self._shapes or {}).get(entry.path)
        if shape is None:
            return 1, entry.size * DECODED_SIZE_FACTOR
        return 1, int(np.prod(shape))

    def read_file(self, fs, entry, pushdowns):
        """Decode one image into a one-row table."""
        image_mod = require_pillow()
        with fs.open(entry.path, "rb") as handle:
            data = handle.read()
        try:
            with image_mod.open(io.BytesIO(data)) as img:
                if self.mode is not None and img.mode != self.mode:
                    img = img.convert(self.mode)
                if self.size is not None:
                    img = img.resize((self.size[1], self.size[0]))
                array = np.asarray(img)
        except Exception as exc:
            raise FileReadError(self.who, entry.path, exc, self.error_hint) from exc
        yield pa.table({"image": tensor_array([array], variable=self.variable)})


class ImageSink(Datasink):
    """One image file per row from tensor column ``column``; files are named from
    ``filename_column`` when given, else ``part-<job>-<task>-<row>.<format>``.

    >>> import tempfile
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
        """Write each row's image to its own file (temporary name, then rename)."""
        image_mod = require_pillow()
        self.use_in_this_process()
        prefix = f"part-{self.job}-{getattr(ctx, 'key', '') or ctx.task_index}"
        record = f"{self.path}/.{prefix}.written"
        paths, sizes, row = [], [], 0
        for table in blocks:
            if self.column not in table.column_names:
                raise KeyError(f"write_images: no column {self.column!r}; the columns are "
                               f"{table.column_names}")
            images = column_images(table.column(self.column))
            names = (table.column(self.filename_column).to_pylist() if self.filename_column
                     else [f"{prefix}-{row + i:06d}" for i in range(table.num_rows)])
            for array, name in zip(images, names, strict=True):
                name = str(name).rsplit("/", 1)[-1]
                if "." not in name:
                    name = f"{name}.{self.file_format}"
                final, temp = f"{self.path}/{name}", f"{self.path}/.{prefix}-{row:06d}.tmp"
                buffer = io.BytesIO()
                image_mod.fromarray(array).save(buffer, format=_pil_format(name, self.file_format))
                with self.fs.open(temp, "wb") as handle:
                    handle.write(buffer.getvalue())
                paths.append(final)
                with self.fs.open(record, "w") as handle:  # abort() removes what this lists
                    handle.write("\n".join(paths))
                self.fs.mv(temp, final)
                sizes.append(int(array.nbytes))
                row += 1
        return pa.table({"path": pa.array(paths, pa.string()),
                         "rows": pa.array([1] * len(paths), pa.int64()),
                         "bytes": pa.array(sizes, pa.int64())})

    def finalize(self, results):
        """Drop the per-task records, then write ``_SUCCESS``."""
        self._remove_records(remove_listed=False)
        return super().finalize(results)

    def abort(self) -> None:
        """Remove every image this job wrote, then its temporary files."""
        self._remove_records(remove_listed=True)
        super().abort()

    def _remove_records(self, remove_listed: bool) -> None:
        if not self.fs.exists(self.path):
            return
        for path in self.fs.ls(self.path, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(f".part-{self.job}-") and name.endswith(".written"):
                if remove_listed:
                    with self.fs.open(path, "r") as handle:
                        for listed in handle.read().splitlines():
                            if listed and self.fs.exists(listed):
                                self.fs.rm(listed)
                self.fs.rm(path)


def _pil_format(name: str, default: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else default
    return {"jpg": "JPEG", "tif": "TIFF"}.get(ext, ext.upper())


def column_images(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Per-row uint8 arrays from a tensor column (or a column of nested lists).

    >>> [a.shape for a in column_images(pa.chunked_array([tensor_array(np.zeros((2, 3, 3)))]))]
    [(3, 3), (3, 3)]
    """
    if is_tensor_type(column.type):
        arrays = tensor_to_numpy(column)
    else:
        arrays = [np.asarray(v) for v in column.to_pylist()]
    return [np.asarray(a).astype(np.uint8, copy=False) for a in arrays]
