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

Ray Data's other read arguments are accepted too (see :func:`ray_read_args`):
``parallelism=`` (deprecated in Ray: the same as ``override_num_blocks``, with a
DeprecationWarning); ``num_cpus=``, ``num_gpus=``, ``memory=``, ``concurrency=`` and
``ray_remote_args=`` (scheduling hints: checked, then not applied, with a warning; they
never change the rows read); ``arrow_open_stream_args=`` (``read_images``:
``arrow_open_file_args=``) with ``buffer_size``, or ``compression`` left to inference;
``meta_provider=`` one of Ray's own providers (ignored, with a DeprecationWarning). An
argument that would change the rows and cannot be honoured raises a TypeError saying
what to do instead.
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


SCHEDULING = ("num_cpus", "num_gpus", "memory", "concurrency")
FILE_ARGS = ("parallelism", *SCHEDULING, "ray_remote_args", "arrow_open_stream_args",
             "meta_provider")
_RAY_PROVIDERS = ("DefaultFileMetadataProvider", "DefaultParquetMetadataProvider",
                  "ParquetMetadataProvider", "FastFileMetadataProvider",
                  "ImageFileMetadataProvider", "BaseFileMetadataProvider")
_INFERS_COMPRESSION = ("read_csv", "read_json", "read_text")


def ray_read_args(who: str, override_num_blocks: int | None, given: dict,
                  allowed: tuple[str, ...] = FILE_ARGS) -> int | None:
    """Check Ray Data's read arguments ``given`` to ``who`` (those of ``allowed``) and
    return the number of blocks asked for (``override_num_blocks``, or the deprecated
    ``parallelism``). Scheduling hints are checked, then not applied, with one warning;
    an argument that would change the rows and cannot be honoured raises a TypeError.

    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     ray_read_args("read_csv", None, {"parallelism": 4, "num_cpus": 2})
    4
    >>> ray_read_args("read_csv", None, {"arrow_open_stream_args": {"compression": "gzip"}})
    Traceback (most recent call last):
    ...
    TypeError: read_csv: arrow_open_stream_args={'compression': 'gzip'} cannot be honoured: streambatch infers compression from the file extension (.gz, .bz2, .zst ...); name the files so and leave 'compression' out
    >>> ray_read_args("read_csv", None, {"colums": ["a"]})
    Traceback (most recent call last):
    ...
    TypeError: read_csv() got an unexpected keyword argument 'colums'
    """
    for name in given:
        if name not in allowed:
            raise TypeError(f"{who}() got an unexpected keyword argument {name!r}")
    blocks = _blocks(who, override_num_blocks, given.pop("parallelism", -1))
    hints = {k: given[k] for k in SCHEDULING if given.get(k) is not None}
    remote = given.get("ray_remote_args") or {}
    if not isinstance(remote, dict):
        raise TypeError(f"{who}: ray_remote_args must be a dict, got {type(remote).__name__}")
    hints.update({k: remote[k] for k in ("num_cpus", "num_gpus", "memory") if k in remote})
    _check_hints(who, hints)
    others = sorted(k for k in remote if k not in ("num_cpus", "num_gpus", "memory"))
    if hints or others:
        _warn_unapplied(who, hints, others)
    for name in ("arrow_open_stream_args", "arrow_open_file_args"):
        if given.get(name) is not None:
            _open_args(who, name, given[name])
    if given.get("meta_provider") is not None:
        _meta_provider(who, given["meta_provider"])
    return blocks


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside
    streambatch (the user's line), from the function that calls ``warnings.warn``."""
    import sys
    from types import FrameType

    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("streambatch"):
        frame, level = frame.f_back, level + 1
    return level


def _blocks(who: str, override_num_blocks: int | None, parallelism) -> int | None:
    """``override_num_blocks``, or Ray's deprecated ``parallelism`` (-1: not given)."""
    if parallelism is None or parallelism == -1:
        return override_num_blocks
    import warnings

    warnings.warn(f"{who}: parallelism= is deprecated (as in Ray Data); use "
                  f"override_num_blocks={parallelism!r}", DeprecationWarning,
                  stacklevel=user_stacklevel())
    v.positive_int("parallelism", parallelism)
    if override_num_blocks is not None and override_num_blocks != parallelism:
        raise ValueError(f"{who}: parallelism={parallelism!r} and override_num_blocks="
                         f"{override_num_blocks!r} disagree; pass only override_num_blocks")
    return parallelism


def _check_hints(who: str, hints: dict) -> None:
    for name, value in hints.items():
        if name == "concurrency":
            v.positive_int(f"{who}: concurrency", value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")


def _warn_unapplied(who: str, hints: dict, others: list[str]) -> None:
    import warnings

    parts = []
    if hints:
        parts.append(", ".join(f"{k}={val!r}" for k, val in hints.items()) + " not applied: "
                     "streambatch gives each read task one CPU slot and sizes read "
                     "concurrency itself")
    if others:
        parts.append(f"ray_remote_args keys {others} ignored (Ray task options)")
    warnings.warn(f"{who}: {'; '.join(parts)}. Neither changes the rows read; to reserve "
                  "resources for work on the rows, pass num_cpus=/num_gpus= to map_batches",
                  UserWarning, stacklevel=user_stacklevel())


def _open_args(who: str, name: str, args) -> None:
    """Options for opening files: ``buffer_size`` (performance only) is accepted, and
    ``compression`` where the reader infers it from the extension anyway."""
    if not isinstance(args, dict):
        raise TypeError(f"{who}: {name} must be a dict, got {type(args).__name__}")
    unknown = sorted(k for k in args if k not in ("buffer_size", "compression"))
    if unknown:
        raise TypeError(f"{who}: {name} keys {unknown} cannot be honoured (only "
                        "'buffer_size' is); open the files yourself and pass filesystem=")
    if args.get("compression") not in (None, "infer") or (
            "compression" in args and who not in _INFERS_COMPRESSION):
        raise TypeError(f"{who}: {name}={args!r} cannot be honoured: streambatch infers "
                        "compression from the file extension (.gz, .bz2, .zst ...); name the "
                        "files so and leave 'compression' out")


def _meta_provider(who: str, provider) -> None:
    """Ray's own metadata providers only change how file sizes are gathered: ignored."""
    import warnings

    cls = type(provider)
    if cls.__module__.startswith("ray.") and cls.__name__ in _RAY_PROVIDERS:
        warnings.warn(f"{who}: meta_provider is deprecated in Ray Data and ignored here "
                      "(streambatch lists the files and reads their metadata itself)",
                      DeprecationWarning, stacklevel=user_stacklevel())
        return
    raise TypeError(f"{who}: meta_provider={cls.__name__} cannot be honoured: streambatch "
                    "lists the files itself; choose files with paths, file_extensions= or "
                    "partition_filter=")


def _take_format_args(who: str, ray_args: dict, ok: dict, refused: tuple = (),
                      advice: str = "") -> None:
    """Remove from ``ray_args`` the format options Ray passes to pyarrow / numpy: those of
    ``ok`` (name: accepted types) do not change the rows and are accepted; ``refused``
    ones raise a TypeError.

    >>> args = {"lines": True, "num_cpus": 1}
    >>> _take_format_args("read_json", args, ok={"lines": (bool,)}); args
    {'num_cpus': 1}
    """
    for name in [k for k in ray_args if k in ok or k in refused]:
        value = ray_args.pop(name)
        if name in refused and value is not None:
            raise TypeError(f"{who}: {name}= cannot be honoured (streambatch's reader does "
                            f"not take it); {advice}")
        if name in ok and not isinstance(value, ok[name]):
            raise TypeError(f"{who}: {name}={value!r}; expected "
                            f"{' or '.join(t.__name__ for t in ok[name])}")


def _read(kind: str, paths, name: str, override_num_blocks, ray_args: dict | None = None,
          **kwargs) -> Dataset:
    from streambatch.connectors.paths import check_paths
    from streambatch.connectors.registry import check_protocol, get_source

    who = {"binary": "read_binary_files"}.get(kind, f"read_{kind}")
    allowed = FILE_ARGS if kind != "images" else (*FILE_ARGS[:-2], "arrow_open_file_args",
                                                  "meta_provider")
    override_num_blocks = ray_read_args(who, override_num_blocks, dict(ray_args or {}), allowed)
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
             partition_filter: PathPartitionFilter | None = None,
             **ray_args) -> Dataset:
    """CSV files with a header row (types inferred by pyarrow; options are pyarrow.csv's).

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.csv", "w").write("x,y\\n1,a\\n")
    >>> sb.read_csv(d).take_all()
    [{'x': 1, 'y': 'a'}]
    """
    return _read("csv", paths, "CSV", override_num_blocks, ray_args, filesystem=filesystem,
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
              partition_filter: PathPartitionFilter | None = None,
              **ray_args) -> Dataset:
    """JSON lines files or files holding a JSON array of objects (detected per file, so
    Ray's ``lines=`` is accepted and not needed; its pyarrow ``read_options`` /
    ``parse_options`` are refused).

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.json", "w").write('[{"x": 1}, {"x": 2}]')
    >>> sb.read_json(d).take_all()
    [{'x': 1}, {'x': 2}]
    """
    _take_format_args("read_json", ray_args, ok={"lines": (bool,)},
                      refused=("read_options", "parse_options"),
                      advice="it parses with pyarrow's defaults; cast or fix columns "
                             "after reading with ds.map_batches instead")
    return _read("json", paths, "JSON", override_num_blocks, ray_args, filesystem=filesystem,
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
              partition_filter: PathPartitionFilter | None = None,
              **ray_args) -> Dataset:
    """A row per line of text files, in column ``text``.

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.txt", "w").write("hello\\nworld\\n")
    >>> sb.read_text(d).take_all()
    [{'text': 'hello'}, {'text': 'world'}]
    """
    return _read("text", paths, "Text", override_num_blocks, ray_args, filesystem=filesystem,
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
                      partition_filter: PathPartitionFilter | None = None,
                      **ray_args) -> Dataset:
    """One row per file: its ``bytes`` and (by default) its ``path``.

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.bin", "wb").write(b"\\x01")
    >>> [r["bytes"] for r in sb.read_binary_files(d).take_all()]
    [b'\\x01']
    """
    return _read("binary", paths, "BinaryFiles", override_num_blocks, ray_args, filesystem=filesystem,
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
               partition_filter: PathPartitionFilter | None = None,
               **ray_args) -> Dataset:
    """``.npy`` files: rows along the first axis in column ``data`` (n-d: a tensor column).
    Ray's ``np.load`` options are accepted (``mmap_mode``... do not change the values),
    except ``allow_pickle=True``.

    >>> import streambatch as sb, tempfile, numpy as np
    >>> d = tempfile.mkdtemp(); np.save(f"{d}/a.npy", np.arange(3))
    >>> sb.read_numpy(d).take_all()
    [{'data': 0}, {'data': 1}, {'data': 2}]
    """
    if ray_args.get("allow_pickle"):
        raise TypeError("read_numpy: allow_pickle=True cannot be honoured: streambatch loads "
                        ".npy files without pickle; save numeric arrays, not object arrays")
    _take_format_args("read_numpy", ray_args, ok={
        "allow_pickle": (bool,), "mmap_mode": (str, type(None)), "encoding": (str,),
        "fix_imports": (bool,), "max_header_size": (int,)})
    return _read("numpy", paths, "Numpy", override_num_blocks, ray_args, filesystem=filesystem,
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
                partition_filter: PathPartitionFilter | None = None,
                **ray_args) -> Dataset:
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
    return _read("images", paths, "Images", override_num_blocks, ray_args, filesystem=filesystem,
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


def from_huggingface(dataset, *, override_num_blocks: int | None = None,
                     **ray_args) -> Dataset:
    """Rows of a Hugging Face ``datasets.Dataset`` (its Arrow table, zero-copy) or of
    any iterable of dicts (e.g. a streaming ``IterableDataset``).

    >>> import streambatch as sb
    >>> sb.from_huggingface(iter([{"text": "a"}, {"text": "b"}])).count()
    2
    """
    import pyarrow as pa

    override_num_blocks = ray_read_args("from_huggingface", override_num_blocks, ray_args,
                                        ("parallelism", "concurrency"))
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
