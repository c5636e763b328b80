"""Table formats with Ray Data's names: ``read_delta`` (Delta Lake), ``read_lance`` (Lance)
and ``read_iceberg`` (Apache Iceberg); their writes are ``Dataset.write_delta``,
``Dataset.write_lance`` and ``Dataset.write_iceberg``.

Each needs its extra (``pip install 'streambatch[delta]'``, ``[lance]``, ``[iceberg]``),
imported only when a read runs. A read opens the table on the driver, pins the version
it saw and makes a read task per data file (Delta, Iceberg) or fragment (Lance), so the
files are read in parallel and streamed; ``columns`` and a later ``select_columns`` are
read from the files alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streambatch import validate as v
from streambatch.dataset import Dataset
from streambatch.operators import logical as L

if TYPE_CHECKING:
    from streambatch.connectors.datasource import Datasource


def _dataset(source: Datasource, name: str, columns: list[str] | None,
             override_num_blocks: int | None) -> Dataset:
    if override_num_blocks is not None:
        source.parallelism = v.positive_int("override_num_blocks", override_num_blocks)
    return Dataset(L.Read(source, name=name, columns=tuple(columns) if columns else None))


def _no_catalog(who: str, catalog: Any, instead: str) -> None:
    """Refuse Ray's ``catalog=`` (a ``ray.data.catalog`` connector, e.g. Unity Catalog).

    >>> _no_catalog("read_delta", object(), "pass the table's path")
    Traceback (most recent call last):
    ...
    NotImplementedError: read_delta: catalog= (a Ray catalog connector) is not supported; pass the table's path
    """
    if catalog is not None:
        raise NotImplementedError(f"{who}: catalog= (a Ray catalog connector) is not "
                                  f"supported; {instead}")


def read_delta(path: str, version: int | None = None, *, storage_options: dict | None = None,
               filesystem: Any = None, catalog: Any = None, columns: list[str] | None = None,
               shuffle: str | None = None, include_paths: bool = False,
               parallelism: int = -1, num_cpus: float | None = None,
               num_gpus: float | None = None, memory: float | None = None,
               ray_remote_args: dict | None = None, concurrency: int | None = None,
               override_num_blocks: int | None = None) -> Dataset:
    """The rows of a Delta Lake table (as Ray Data's): the latest version, or
    ``version`` (time travel). One read task per data file; partition columns come from
    the table's log. ``filesystem`` (pyarrow or fsspec) reads the files,
    ``storage_options`` go to deltalake for the log; ``include_paths`` adds each row's
    file as ``path``; ``shuffle="files"`` reads the files in a random order; ``catalog``
    (a Ray catalog connector) is not supported. Tables with deletion vectors or
    column mapping are refused (read them with deltalake). ``parallelism``,
    ``num_cpus``, ``num_gpus``, ``memory``, ``ray_remote_args`` and ``concurrency`` are
    accepted and ignored. Needs
    ``pip install 'streambatch[delta]'``.

    >>> import streambatch as sb, tempfile
    >>> path = tempfile.mkdtemp() + "/t"
    >>> sb.range(3).write_delta(path)
    >>> sb.read_delta(path).sum("id")
    3
    """
    from streambatch.connectors.delta import DeltaSource

    _no_catalog("read_delta", catalog, "pass the table's path")
    source = DeltaSource(path, version=version, columns=columns, filesystem=filesystem,
                         storage_options=storage_options, include_paths=include_paths,
                         shuffle=shuffle)
    return _dataset(source, "Delta", columns, override_num_blocks)


def read_lance(uri: str, *, version: int | str | None = None, columns: list[str] | None = None,
               filter: str | None = None, storage_options: dict | None = None,
               scanner_options: dict | None = None, ray_remote_args: dict | None = None,
               num_cpus: float | None = None, num_gpus: float | None = None,
               memory: float | None = None, concurrency: int | None = None,
               override_num_blocks: int | None = None) -> Dataset:
    """The rows of a Lance dataset (as Ray Data's): the latest version, or ``version``;
    one read task per fragment. ``filter`` is a Lance SQL predicate (``"x > 2 AND s IS
    NOT NULL"``) applied in the scan; ``scanner_options`` go to ``LanceDataset.scanner``
    (e.g. ``batch_size``). ``ray_remote_args``, ``num_cpus``, ``num_gpus``, ``memory``
    and ``concurrency`` are accepted and ignored. Needs ``pip install 'streambatch[lance]'``.

    >>> import streambatch as sb, tempfile
    >>> uri = tempfile.mkdtemp() + "/t.lance"
    >>> sb.range(4).write_lance(uri)
    >>> sb.read_lance(uri, filter="id >= 2").take_all()
    [{'id': 2}, {'id': 3}]
    """
    from streambatch.connectors.lance import LanceSource

    source = LanceSource(uri, version=version, columns=columns, filter=filter,
                         storage_options=storage_options, scanner_options=scanner_options)
    return _dataset(source, "Lance", columns, override_num_blocks)


def read_iceberg(*, table_identifier: str, row_filter: Any = None, parallelism: int = -1,
                 selected_fields: tuple[str, ...] = ("*",), snapshot_id: int | None = None,
                 scan_kwargs: dict | None = None, catalog_kwargs: dict | None = None,
                 catalog: Any = None, ray_remote_args: dict | None = None, num_cpus: float | None = None,
                 num_gpus: float | None = None, memory: float | None = None,
                 override_num_blocks: int | None = None) -> Dataset:
    """The rows of an Iceberg table (as Ray Data's), through PyIceberg: the catalog is
    ``pyiceberg.catalog.load_catalog(catalog_kwargs["name"], **the rest)`` (e.g. a
    local SQL catalog: ``{"name": "default", "type": "sql", "uri": "sqlite:///c.db",
    "warehouse": "file:///w"}``). ``row_filter`` (a string such as ``"x >= 2"`` or a
    PyIceberg expression), ``selected_fields`` and ``snapshot_id`` (time travel) shape
    the scan; its planned files become the read tasks (``override_num_blocks`` groups
    them). ``scan_kwargs`` go to ``Table.scan``; ``catalog`` (a Ray catalog connector)
    is ignored when ``catalog_kwargs`` is given, else refused; ``parallelism``, ``ray_remote_args``,
    ``num_cpus``, ``num_gpus`` and ``memory`` are accepted and ignored. Needs
    ``pip install 'streambatch[iceberg]'``.

    >>> import streambatch as sb, tempfile
    >>> d = tempfile.mkdtemp()
    >>> kw = {"name": "default", "type": "sql", "uri": f"sqlite:///{d}/c.db", "warehouse": f"file://{d}"}
    >>> sb.range(4).write_iceberg("db.t", catalog_kwargs=kw)
    >>> sb.read_iceberg(table_identifier="db.t", catalog_kwargs=kw, row_filter="id >= 3").take_all()
    [{'id': 3}]
    """
    from streambatch.connectors.iceberg import IcebergSource

    if catalog_kwargs is None:
        _no_catalog("read_iceberg", catalog, "pass catalog_kwargs")
    fields = None if tuple(selected_fields) == ("*",) else list(selected_fields)
    source = IcebergSource(table_identifier, row_filter=row_filter, columns=fields,
                           snapshot_id=snapshot_id, scan_kwargs=scan_kwargs,
                           catalog_kwargs=catalog_kwargs)
    return _dataset(source, "Iceberg", fields, override_num_blocks)


__all__ = ["read_delta", "read_lance", "read_iceberg"]
