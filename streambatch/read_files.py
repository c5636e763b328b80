"""File and framework sources: ``read_csv``, ``read_json``, ``read_text``,
``read_binary_files``, ``read_numpy``, ``read_images``, ``from_torch``,
``from_huggingface`` (re-exported by :mod:`streambatch.read_api`).

Every file reader takes the same options, as Ray Data's:

- ``paths``: a file, a directory (searched recursively), a glob, a ``pathlib.Path``,
  a list of them, or any fsspec URL (``memory://``, ``s3://`` with
  ``pip install 'streambatch[s3]'`` ...); ``filesystem=`` passes a configured
  ``pyarrow.fs.FileSystem`` or fsspec filesystem instead.
- ``partitioning``: ``key=value`` directories anywhere in a file's path become columns
  (``"hive"``, the default; ``None`` turns that off; a :class:`streambatch.Partitioning`
  chooses the style, ``base_dir``, ``field_names`` and ``field_types``).
- ``include_paths=True`` adds a ``path`` column.
- ``ignore_missing_paths=True`` leaves out paths that do not exist.
- ``file_extensions=["csv", ...]`` keeps only files with those extensions (explicit ones
  too) and replaces the format's default choice of files in directories.
- ``shuffle="files"`` (or a :class:`streambatch.FileShuffleConfig` with a seed) reads the
  files in a random order.
- ``partition_filter=streambatch.PathPartitionFilter.of(lambda values: ...)`` reads only
  the files whose partition values (strings, unless typed) pass the function.
- ``on_error="skip"`` reads past a file that cannot be read or decoded: its path and
  error go to ``ds.dead_letters()`` (rows it yielded before the error are kept); the
  default ``"raise"`` stops with an error naming the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streambatch import validate as v
from streambatch.dataset import Dataset
from streambatch.operators import logical as L

if TYPE_CHECKING:
    import os
    from typing import TypeAlias

    import fsspec
    import pyarrow.fs

    from streambatch.connectors.datasource import (
        Datasource,
        FileShuffleConfig,
        Partitioning,
        PathPartitionFilter,
    )

    Paths: TypeAlias = str | os.PathLike | list[str | os.PathLike]
    FileSystem: TypeAlias = pyarrow.fs.FileSystem | fsspec.AbstractFileSystem


def _read(kind: str, paths, name: str, override_num_blocks, **kwargs) -> Dataset:
    from streambatch.connectors.paths import check_paths
    from streambatch.connectors.registry import check_protocol, get_source

    who = {"binary": "read_binary_files"}.get(kind, f"read_{kind}")
    check_protocol(check_paths(paths, who))
    source = get_source(kind)(paths, **kwargs)
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name=name))


def read_csv(paths: Paths, *, filesystem: FileSystem | None = None,
             include_paths: bool = False, partitioning: str | Partitioning | None = "hive",
             parse_options=None, convert_options=None, read_options=None,
             override_num_blocks: int | None = None, on_error: str = "raise",
             ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
             shuffle: str | FileShuffleConfig | None = None,
             partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """CSV files with a header row (types inferred by pyarrow; options are pyarrow.csv's).

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.csv", "w").write("x,y\\n1,a\\n")
    >>> sb.read_csv(d).take_all()
    [{'x': 1, 'y': 'a'}]
    """
    return _read("csv", paths, "CSV", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning,
                 parse_options=parse_options, convert_options=convert_options,
                 read_options=read_options, on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def read_json(paths: Paths, *, filesystem: FileSystem | None = None,
              include_paths: bool = False, partitioning: str | Partitioning | None = "hive",
              override_num_blocks: int | None = None, on_error: str = "raise",
              ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
              shuffle: str | FileShuffleConfig | None = None,
              partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """JSON lines files or files holding a JSON array of objects (detected per file).

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.json", "w").write('[{"x": 1}, {"x": 2}]')
    >>> sb.read_json(d).take_all()
    [{'x': 1}, {'x': 2}]
    """
    return _read("json", paths, "JSON", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning,
                 on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def read_text(paths: Paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
              filesystem: FileSystem | None = None, include_paths: bool = False,
              partitioning: str | Partitioning | None = "hive",
              override_num_blocks: int | None = None, on_error: str = "raise",
              ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
              shuffle: str | FileShuffleConfig | None = None,
              partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """A row per line of text files, in column ``text``.

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.txt", "w").write("hello\\nworld\\n")
    >>> sb.read_text(d).take_all()
    [{'text': 'hello'}, {'text': 'world'}]
    """
    return _read("text", paths, "Text", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning, encoding=encoding,
                 drop_empty_lines=drop_empty_lines, on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def read_binary_files(paths: Paths, *, include_paths: bool = True,
                      filesystem: FileSystem | None = None,
                      partitioning: str | Partitioning | None = "hive",
                      override_num_blocks: int | None = None,
                      on_error: str = "raise",
                      ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
                      shuffle: str | FileShuffleConfig | None = None,
                      partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """One row per file: its ``bytes`` and (by default) its ``path``.

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.bin", "wb").write(b"\\x01")
    >>> [r["bytes"] for r in sb.read_binary_files(d).take_all()]
    [b'\\x01']
    """
    return _read("binary", paths, "BinaryFiles", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning,
                 on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def read_numpy(paths: Paths, *, filesystem: FileSystem | None = None,
               include_paths: bool = False,
               partitioning: str | Partitioning | None = "hive",
               override_num_blocks: int | None = None, on_error: str = "raise",
               ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
               shuffle: str | FileShuffleConfig | None = None,
               partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """``.npy`` files: rows along the first axis in column ``data`` (n-d: a tensor column).

    >>> import streambatch as sb, tempfile, numpy as np
    >>> d = tempfile.mkdtemp(); np.save(f"{d}/a.npy", np.arange(3))
    >>> sb.read_numpy(d).take_all()
    [{'data': 0}, {'data': 1}, {'data': 2}]
    """
    return _read("numpy", paths, "Numpy", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning,
                 on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def read_images(paths: Paths, *, size: tuple[int, int] | None = None, mode: str | None = "RGB",
                include_paths: bool = False, filesystem: FileSystem | None = None,
                partitioning: str | Partitioning | None = "hive",
                override_num_blocks: int | None = None, on_error: str = "raise",
                ignore_missing_paths: bool = False, file_extensions: list[str] | None = None,
                shuffle: str | FileShuffleConfig | None = None,
                partition_filter: PathPartitionFilter | None = None) -> Dataset:
    """Images decoded by Pillow into column ``image``: a fixed-shape tensor column when
    every image has the same shape (always with ``size=(height, width)``), a
    variable-shape one otherwise. A file that does not decode raises an error
    naming it (with ``on_error="skip"`` it goes to ``ds.dead_letters()`` instead). Needs ``pip install 'streambatch[images]'``.

    >>> import streambatch as sb, tempfile, numpy as np
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp(); Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f"{d}/a.png")
    >>> sb.read_images(d, size=(4, 4)).to_numpy("image").shape
    (1, 4, 4, 3)
    """
    return _read("images", paths, "Images", override_num_blocks, filesystem=filesystem,
                 include_paths=include_paths, partitioning=partitioning, size=size, mode=mode,
                 on_error=v.on_error(on_error),
                 ignore_missing_paths=ignore_missing_paths,
                 file_extensions=file_extensions, shuffle=shuffle,
                 partition_filter=partition_filter)


def from_torch(dataset, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of a PyTorch dataset: map-style ones are split by index, iterable ones are
    read by one task. Dict items become columns, tuples ``item_0, item_1, ...``,
    anything else column ``item``; tensors become numpy / tensor columns.

    >>> import streambatch as sb, torch
    >>> class Squares(torch.utils.data.Dataset):
    ...     def __len__(self): return 3
    ...     def __getitem__(self, i): return {"x": i, "sq": torch.tensor(i * i)}
    >>> sorted(r["sq"] for r in sb.from_torch(Squares()).take_all())
    [0, 1, 4]
    """
    from streambatch.connectors.torch_source import source_for

    source = source_for(dataset)
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name=source.name))


def from_huggingface(dataset, *, override_num_blocks: int | None = None) -> Dataset:
    """Rows of a Hugging Face ``datasets.Dataset`` (its Arrow table, zero-copy) or of
    any iterable of dicts (e.g. a streaming ``IterableDataset``).

    >>> import streambatch as sb
    >>> sb.from_huggingface(iter([{"text": "a"}, {"text": "b"}])).count()
    2
    """
    import pyarrow as pa

    table = getattr(getattr(dataset, "data", None), "table", None)
    if isinstance(table, pa.Table):
        if getattr(dataset, "_indices", None) is not None:
            table = dataset.flatten_indices().data.table
        from streambatch.connectors.memory import ArrowSource

        source: Datasource = ArrowSource([table])
    else:
        from streambatch.connectors.torch_source import source_for

        source = source_for(dataset)
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name="HuggingFace"))


__all__ = ["read_csv", "read_json", "read_text", "read_binary_files", "read_numpy",
           "read_images", "from_torch", "from_huggingface"]
