"""Images: a source decoding files with Pillow into a tensor column ``image`` (the
sink, one image file per row, is in image_sink.py).

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
from streambatch.connectors.file_based import FileReadError, FileSource
from streambatch.connectors.tensors import tensor_array

from streambatch._dependencies import import_optional

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4, "YCbCr": 3, "LA": 2, "I": 1, "F": 1}
DECODED_SIZE_FACTOR = 20


def require_pillow():
    """Import Pillow or fail with the pip command that installs it."""
    return import_optional("PIL.Image", extra="images", what="read_images/write_images")


class ImageSource(FileSource):
    """Image files decoded to ``mode`` (e.g. "RGB", "L"; None keeps each file's mode),
    resized to ``size=(height, width)`` when given (bilinear, before the mode is applied, as
    Ray Data resizes): a JPEG is then decoded at the smallest
    of 1/2, 1/4 or 1/8 scale that is still at least that size (Pillow's ``draft``; about
    3x faster on large photos; pixels within resampling differences of a full decode).

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
        self.size = (size[0], size[1]) if size is not None else None
        self.mode = mode
        self._shapes: dict[str, tuple | None] | None = None
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
                if self.size is not None:  # a JPEG decodes at 1/2, 1/4 or 1/8 scale when
                    img.draft(self.mode, (self.size[1], self.size[0]))  # that is still big enough
                if self.size is not None:  # as Ray Data: bilinear, then the mode
                    img = img.resize((self.size[1], self.size[0]),
                                     resample=image_mod.Resampling.BILINEAR)
                if self.mode is not None and img.mode != self.mode:
                    img = img.convert(self.mode)
                array = np.asarray(img)
        except Exception as exc:
            raise FileReadError(self.who, entry.path, exc, self.error_hint) from exc
        yield pa.table({"image": tensor_array([array], variable=self.variable)})
