"""A lazy, string-keyed registry of sources and sinks (like fsspec's ``registry``).

Nothing is imported until a name is looked up; a missing optional dependency
fails with the pip command that installs it.

>>> get_source("csv").__name__
'CSVSource'
>>> sorted(known_sinks())[:3]
['csv', 'images', 'json']
>>> get_source("nope")
Traceback (most recent call last):
...
KeyError: "no source named 'nope'; known: binary, csv, images, iterable, json, numpy, parquet, text, torch"
"""

from __future__ import annotations

import importlib

from streambatch._dependencies import import_optional

# name -> ("module:Class", the pip extra that provides what it imports, or None)
_SOURCES: dict[str, tuple[str, str | None]] = {
    "parquet": ("streambatch.connectors.parquet:ParquetSource", None),
    "csv": ("streambatch.connectors.csv:CSVSource", None),
    "json": ("streambatch.connectors.json:JSONSource", None),
    "text": ("streambatch.connectors.text:TextSource", None),
    "binary": ("streambatch.connectors.binary:BinarySource", None),
    "numpy": ("streambatch.connectors.numpy_files:NumpySource", None),
    "images": ("streambatch.connectors.images:ImageSource", "images"),
    "torch": ("streambatch.connectors.torch_source:SequenceSource", None),
    "iterable": ("streambatch.connectors.torch_source:IterableSource", None),
}
_SINKS: dict[str, tuple[str, str | None]] = {
    "parquet": ("streambatch.connectors.parquet_sink:ParquetSink", None),
    "csv": ("streambatch.connectors.csv:CSVSink", None),
    "json": ("streambatch.connectors.json:JSONSink", None),
    "numpy": ("streambatch.connectors.numpy_files:NumpySink", None),
    "images": ("streambatch.connectors.image_sink:ImageSink", "images"),
}
# URL protocols whose fsspec implementation lives in another package.
PROTOCOL_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                   "gcs": ("gcsfs", "gcs"), "abfs": ("adlfs", "azure"), "az": ("adlfs", "azure")}


def register_source(name: str, target: str, extra: str | None = None) -> None:
    """Register ``"module:Class"`` under ``name`` (imported on first lookup).

    >>> register_source("mine", "streambatch.connectors.text:TextSource")
    >>> get_source("mine").__name__
    'TextSource'
    """
    _SOURCES[name] = (target, extra)


def register_sink(name: str, target: str, extra: str | None = None) -> None:
    """Register a sink class ``"module:Class"`` under ``name``."""
    _SINKS[name] = (target, extra)


def known_sources() -> list[str]:
    """Registered source names."""
    return sorted(_SOURCES)


def known_sinks() -> list[str]:
    """Registered sink names."""
    return sorted(_SINKS)


def _load(table: dict, kind: str, name: str):
    if name not in table:
        raise KeyError(f"no {kind} named {name!r}; known: {', '.join(sorted(table))}")
    target, extra = table[name]
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        if extra is None:
            raise
        raise ImportError(f"the {name} {kind} needs an optional dependency ({exc.name}): "
                          f"pip install 'streambatch[{extra}]'") from exc


def get_source(name: str):
    """The source class registered as ``name``."""
    return _load(_SOURCES, "source", name)


def get_sink(name: str):
    """The sink class registered as ``name``."""
    return _load(_SINKS, "sink", name)


def check_protocol(path) -> None:
    """Fail early, with the install hint, when a URL's filesystem package is missing.

    >>> check_protocol("/local/file.csv")
    """
    first = path if isinstance(path, str) else next(iter(path), "")
    if not isinstance(first, str) or "://" not in first:
        return
    protocol = first.split("://", 1)[0]
    if protocol in PROTOCOL_EXTRAS:
        module, extra = PROTOCOL_EXTRAS[protocol]
        import_optional(module, extra=extra, what=f"{protocol}:// paths")
