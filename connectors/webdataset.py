"""WebDataset: training shards, tar files whose members are grouped into samples (rows)
by key, as Ray Data's ``read_webdataset`` / ``write_webdataset``.

A member ``dir/n0042.seg.png`` belongs to the sample of key ``dir/n0042`` (its path up to
the first dot of its last part) and becomes that row's column ``seg.png`` (the rest of
the name). Consecutive members with the same key make one sample; every row has
``__key__`` and ``__url__`` (the shard's path). Members without a dot are skipped, as
Ray's reader skips them.

>>> import tempfile
>>> import pyarrow as pa
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp()
>>> sink = WebDatasetSink(d); _ = sink.start()
>>> class Ctx: task_index = 0; key = "k0"
>>> _ = sink.write([pa.table({"__key__": ["a", "b"], "txt": ["hi", "yo"], "cls": [1, 2]})], Ctx())
>>> [(r["__key__"], r["txt"], r["cls"]) for task in WebDatasetSource(d).read_tasks(1, Pushdowns())
...  for t in task() for r in t.to_pylist()]
[('a', 'hi', 1), ('b', 'yo', 2)]
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileReadError, FileSource

from streambatch._dependencies import import_optional

SAMPLES_PER_BLOCK = 256  # rows gathered into one block while a shard streams
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm")
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def split_name(name: str) -> tuple[str | None, str | None]:
    """``(key, suffix)`` of a member name: the path up to the first dot of its last part,
    and the rest; ``(None, None)`` when the last part has no dot (Ray's ``base_plus_ext``).

    >>> split_name("train/n01.seg.png"), split_name("a.b/c.txt"), split_name("README")
    (('train/n01', 'seg.png'), ('a.b/c', 'txt'), (None, None))
    """
    match = _KEY.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


def _suffix_ok(suffix: str, patterns) -> bool:
    """Ray's suffix test: None keeps all; a callable decides; else a list of literal
    suffixes (with or without the dot) or glob patterns (``*.png``).

    >>> _suffix_ok("seg.png", ["*.png"]), _suffix_ok("txt", [".txt"]), _suffix_ok("cls", ["txt"])
    (True, True, False)
    """
    if patterns is None:
        return True
    if callable(patterns):
        return bool(patterns(suffix))
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if "*" in pattern or "?" in pattern:
            if fnmatch.fnmatch("." + suffix, pattern):
                return True
        elif suffix == pattern or "." + suffix == pattern:
            return True
    return False


def _apply(functions, value, default: Callable | None = None):
    """Apply a function or list of functions in order; a non-callable entry (``True``,
    ``"PIL"``...) stands for ``default`` with that ``format`` (Ray's ``_apply_list``)."""
    if functions is None:
        return value
    for function in functions if isinstance(functions, list) else [functions]:
        if not callable(function):
            if default is None:
                raise TypeError(f"expected a function, got {function!r}")
            value = default(value, format=function)
        else:
            value = function(value)
    return value


def default_decoder(sample: dict[str, Any], format: bool | str = True) -> dict[str, Any]:
    """Decode the columns of one sample by extension (the last dot-part of the column
    name), as Ray's default decoder: ``txt``/``text`` -> str, ``cls``/``cls2`` -> int,
    images -> numpy arrays (``format="PIL"``: PIL images), ``json``, ``npy``, ``mp``
    (msgpack), ``pt``/``pth`` (torch), ``pickle``/``pkl``. Others stay bytes. Pickle
    and torch payloads run code when loaded: decode only shards you trust.

    >>> default_decoder({"__key__": "a", "txt": b"hi", "cls": b"3", "json": b'{"x": 1}', "bin": b"\\x00"})
    {'__key__': 'a', 'txt': 'hi', 'cls': 3, 'json': {'x': 1}, 'bin': b'\\x00'}
    """
    out = dict(sample)
    for column, value in sample.items():
        ext = column.split(".")[-1]
        if column.startswith("__") or not isinstance(value, bytes):
            continue
        if ext in ("txt", "text"):
            out[column] = value.decode("utf-8")
        elif ext in ("cls", "cls2"):
            out[column] = int(value.decode("utf-8"))
        elif ext in IMAGE_EXTENSIONS:
            import numpy as np
            import PIL.Image

            image = PIL.Image.open(io.BytesIO(value))
            out[column] = image if format == "PIL" else np.asarray(image)
        elif ext == "json":
            out[column] = json.loads(value)
        elif ext == "npy":
            import numpy as np

            out[column] = np.load(io.BytesIO(value))
        elif ext == "mp":
            msgpack = import_optional("msgpack", what="decoding a .mp column")
            out[column] = msgpack.unpackb(value, raw=False)
        elif ext in ("pt", "pth"):
            import torch

            out[column] = torch.load(io.BytesIO(value), weights_only=False)
        elif ext in ("pickle", "pkl"):
            import pickle

            out[column] = pickle.loads(value)
    return out


def default_encoder(sample: dict[str, Any], format: bool | str = True) -> dict[str, Any]:
    """Encode the columns of one sample to bytes by extension, as Ray's default encoder
    (the inverse of :func:`default_decoder`); other values pass unchanged (bytes and
    str are written as they are).

    >>> default_encoder({"__key__": "a", "txt": "hi", "cls": 3, "json": {"x": 1}})
    {'__key__': 'a', 'txt': b'hi', 'cls': b'3', 'json': b'{"x": 1}'}
    """
    out = dict(sample)
    for column, value in sample.items():
        ext = column.split(".")[-1]
        if column.startswith("__") or value is None:
            continue
        if ext == "txt":
            out[column] = value.encode("utf-8") if isinstance(value, str) else value
        elif ext in ("cls", "cls2"):
            out[column] = str(value).encode("utf-8")
        elif ext in IMAGE_EXTENSIONS:
            import numpy as np
            import PIL.Image

            if isinstance(value, np.ndarray):
                value = PIL.Image.fromarray(value)
            stream = io.BytesIO()
            value.save(stream, format={"jpg": "jpeg"}.get(ext.lower(), ext))
            out[column] = stream.getvalue()
        elif ext == "json":
            out[column] = json.dumps(value).encode("utf-8")
        elif ext == "npy":
            import numpy as np

            stream = io.BytesIO()
            np.save(stream, value)
            out[column] = stream.getvalue()
        elif ext == "mp":
            msgpack = import_optional("msgpack", what="encoding a .mp column")
            out[column] = msgpack.dumps(value)
        elif ext in ("pt", "pth"):
            import torch

            stream = io.BytesIO()
            torch.save(value, stream)
            out[column] = stream.getvalue()
        elif ext in ("pickle", "pkl"):
            import pickle

            out[column] = pickle.dumps(value)
    return out


class WebDatasetSource(FileSource):
    """``.tar`` shards: one row per sample (see the module docstring). ``decoder`` is a
    function (or list of functions) from a sample dict to a sample dict, ``True`` or
    ``"PIL"`` for :func:`default_decoder`, None or False for the raw bytes.
    ``fileselect`` keeps members by name (suffix patterns or a function), ``filerename``
    renames them before grouping, ``suffixes`` keeps columns by suffix while grouping."""

    name = "WebDataset"
    who = "read_webdataset"
    suffixes = (".tar",)
    in_memory_factor = 1.0
    error_hint = ("expected a tar file whose members are named <key>.<column>; a "
                  "WebDataset shard")

    def __init__(self, paths, *, decoder=True, fileselect=None, filerename=None,
                 suffixes=None, verbose_open: bool = False, expand_json: bool = False,
                 **kwargs) -> None:
        for name, value in (("decoder", decoder), ("fileselect", fileselect),
                            ("filerename", filerename), ("suffixes", suffixes)):
            _check_spec(name, value)
        kwargs.setdefault("partitioning", None)
        super().__init__(paths, **kwargs)
        self.decoder = None if decoder is False else decoder
        self.fileselect, self.filerename = fileselect, filerename
        self.member_suffixes, self.verbose_open = suffixes, verbose_open
        if not isinstance(expand_json, bool):
            raise TypeError(f"read_webdataset: expand_json={expand_json!r}; expected True or False")
        self.expand_json = expand_json

    def read_file(self, fs, entry, pushdowns) -> Iterator[pa.Table]:
        """Stream the shard's members, group them into samples, decode them, and yield
        blocks of up to ``SAMPLES_PER_BLOCK`` rows."""
        from streambatch.connectors.row_conversion import RowsToBlockError, rows_to_block

        rows: list[dict] = []
        first = 0
        for index, sample in enumerate(self._samples(fs, entry.path)):
            rows.append(sample)
            if len(rows) == SAMPLES_PER_BLOCK:
                yield _block(rows, first, entry.path, rows_to_block, RowsToBlockError)
                rows, first = [], index + 1
        if rows:
            yield _block(rows, first, entry.path, rows_to_block, RowsToBlockError)

    def _samples(self, fs, path: str) -> Iterator[dict]:
        current: dict | None = None
        for name, data in self._members(fs, path):
            key, suffix = split_name(name)
            if key is None or suffix is None:
                continue
            if current is None or key != current["__key__"]:
                if current is not None and len(current) > 2:
                    yield self._decoded(current, path)
                current = {"__key__": key, "__url__": path}
            if suffix in current:
                raise FileReadError(self.who, path, ValueError(
                    f"member {name!r} repeats column {suffix!r} of sample {key!r}"),
                    "a sample's members must have distinct names; rename one (filerename=) or "
                    "leave one out (fileselect=)")
            if _suffix_ok(suffix, self.member_suffixes):
                current[suffix] = data
        if current is not None and len(current) > 2:
            yield self._decoded(current, path)

    def _members(self, fs, path: str) -> Iterator[tuple[str, bytes]]:
        import tarfile

        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as stream:
            if self.verbose_open:
                print(f"read_webdataset: start {path}")
            for info in stream:
                if not info.isreg() or info.name is None:
                    continue
                member = stream.extractfile(info)
                data = member.read() if member is not None else b""
                name = _apply(self.filerename, info.name)
                if not isinstance(name, str):
                    raise TypeError(f"filerename returned {type(name).__name__} for member "
                                    f"{info.name!r}; it must return the new name (a str)")
                if _suffix_ok(name, self.fileselect):
                    yield name, data
            if self.verbose_open:
                print(f"read_webdataset: done {path}")

    def _decoded(self, sample: dict, path: str) -> dict:
        sample = self._decoded_only(sample, path)
        if not self.expand_json:
            return sample
        try:
            return expanded_json(sample)
        except (ValueError, TypeError) as exc:
            raise FileReadError(self.who, path, exc, "expand_json=True makes the keys of each "
                                "sample's .json member (a JSON object) columns; leave it out "
                                "to keep the member as one column") from exc

    def _decoded_only(self, sample: dict, path: str) -> dict:
        if self.decoder is None:
            return sample
        try:
            out = _apply(self.decoder, sample, default_decoder)
        except Exception as exc:
            raise FileReadError(self.who, path, exc, f"decoding sample {sample['__key__']!r} "
                                f"(columns {sorted(k for k in sample if not k.startswith('__'))});"
                                " pass decoder=None for the raw bytes, or your own decoder") \
                from exc
        if not isinstance(out, dict):
            raise FileReadError(self.who, path, TypeError(
                f"the decoder returned a {type(out).__name__} for sample "
                f"{sample['__key__']!r}"), "a decoder maps a sample dict to a sample dict")
        return out


def expanded_json(sample: dict) -> dict:
    """The sample with the keys of its ``json`` member as columns too (Ray's
    ``expand_json``): the member may be decoded already (a dict) or still bytes / str;
    the ``json`` column stays. A sample without one, a member that is not a JSON object,
    or a key that is already a column is an error naming the sample.

    >>> expanded_json({"__key__": "a", "json": b'{"label": 3, "tags": ["x"]}'})
    {'__key__': 'a', 'json': b'{"label": 3, "tags": ["x"]}', 'label': 3, 'tags': ['x']}
    >>> expanded_json({"__key__": "a", "txt": "hi", "json": {"txt": "no"}})
    Traceback (most recent call last):
    ...
    ValueError: sample 'a': the keys ['txt'] of its json member are columns already
    """
    key = sample.get("__key__")
    if "json" not in sample:
        raise ValueError(f"sample {key!r} has no json member (<key>.json) to expand; its "
                         f"columns are {sorted(k for k in sample if not k.startswith('__'))}")
    value = sample["json"]
    if isinstance(value, (bytes, bytearray, str)):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise TypeError(f"sample {key!r}: its json member holds a {type(value).__name__}, "
                        "not a JSON object")
    clash = sorted(k for k in value if k in sample)
    if clash:
        raise ValueError(f"sample {key!r}: the keys {clash} of its json member are columns "
                         "already")
    return {**sample, **value}


def _block(rows: list[dict], first: int, path: str, rows_to_block, error_type) -> pa.Table:
    try:
        return rows_to_block(rows)
    except error_type as err:
        raise FileReadError("read_webdataset", path, err, f"rows count the samples of this "
                            f"block from sample {first} of the shard; decode to one type per "
                            "column (decoder=) or read the raw bytes (decoder=None)") from err


def _check_spec(name: str, value) -> None:
    ok = value is None or isinstance(value, (bool, str)) or callable(value) or (
        isinstance(value, (list, tuple)) and all(callable(v) or isinstance(v, (str, bool))
                                                 for v in value))
    if not ok:
        raise TypeError(f"read_webdataset: {name}={value!r}; expected None, True, a "
                        "function, or a list of functions / suffix patterns")


class WebDatasetSink(FileDatasink):
    """One ``.tar`` shard per partition (or per ``num_rows_per_file`` rows): each row is a
    sample whose non-null columns become members ``<__key__>.<column>``, encoded by
    ``encoder`` (a function or list of functions from a sample dict to a sample dict;
    ``True`` for :func:`default_encoder`; None writes bytes and str as they are). A row
    without ``__key__`` gets a key made from its shard's name and row number, the same
    for every attempt of its task. Columns named ``__*`` other than ``__key__`` are not
    written (``__url__`` of a read is left out).

    >>> import tarfile, tempfile
    >>> sink = WebDatasetSink(tempfile.mkdtemp()); _ = sink.start()
    >>> class Ctx: task_index = 0; key = "k0"
    >>> path = sink.write([pa.table({"__key__": ["x"], "bin": [b"\\x00\\x01"]})], Ctx())["path"][0].as_py()
    >>> [(m.name, m.size) for m in tarfile.open(path)]
    [('x.bin', 2)]
    """

    name = "WebDataset"
    suffix = ".tar"

    def __init__(self, path: str, filesystem=None, mode: str = "append",
                 num_rows_per_file: int | None = None, encoder=True) -> None:
        if not (encoder is None or isinstance(encoder, (bool, str)) or callable(encoder)
                or isinstance(encoder, list)):
            raise TypeError(f"write_webdataset: encoder={encoder!r}; expected True, None, a "
                            "function or a list of functions")
        super().__init__(path, filesystem=filesystem, mode=mode,
                         num_rows_per_file=num_rows_per_file)
        self.encoder = None if encoder is False else encoder

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write every row as one sample; return (rows, bytes of payload)."""
        import tarfile

        from streambatch.connectors.tensors import records

        stem = path.rsplit("/", 1)[-1].lstrip(".").split(".")[0]
        rows = size = 0
        with self.fs.open(path, "wb") as handle, \
                tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT) as stream:
            for table in tables:
                for record in records(table):
                    size += self._add(stream, record, stem, rows)
                    rows += 1
        return rows, size

    def _add(self, stream, record: dict, stem: str, row: int) -> int:
        import tarfile

        if self.encoder is not None:
            try:
                record = _apply(self.encoder, record, default_encoder)
            except Exception as exc:
                raise ValueError(f"write_webdataset: row {row} of shard {stem!r}: the encoder "
                                 f"failed: {type(exc).__name__}: {exc}") from exc
        key = record.get("__key__")
        if key is None:
            key = hashlib.sha1(f"{stem}/{row}".encode()).hexdigest()[:20]
        key = str(key)
        if split_name(f"{key}.x") != (key, "x"):
            raise ValueError(f"write_webdataset: row {row} of shard {stem!r} has __key__ "
                             f"{key!r}, which readers cannot recover: they split a member name "
                             "at the first dot of its last path part. Use keys whose last part "
                             "is non-empty and has no dots")
        size = 0
        for column, value in record.items():
            if value is None or column.startswith("__"):
                continue
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError(
                    f"write_webdataset: row {row} (key {key!r}), column {column!r} holds a "
                    f"{type(value).__name__}, which has no encoding: name the column with an "
                    "extension the encoder knows (.txt .cls .json .npy .png .jpg .mp .pt "
                    ".pickle), or encode it to bytes or str first")
            info = tarfile.TarInfo(f"{key}.{column}")
            info.size, info.mode, info.uname, info.gname = len(value), 0o644, "data", "data"
            stream.addfile(info, io.BytesIO(value))
            size += len(value)
        return size
