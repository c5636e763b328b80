"""CSV: a source streaming each file through pyarrow's incremental reader, and a sink
writing one CSV file per partition.

>>> import tempfile, pyarrow as pa
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.csv", "w").write("x,y\\n1,a\\n2,b\\n")
>>> [t.to_pydict() for task in CSVSource(d).read_tasks(1, Pushdowns()) for t in task()]
[{'x': [1, 2], 'y': ['a', 'b']}]
"""

from __future__ import annotations

import copy

import pyarrow as pa
from streambatch.connectors.arrow_types import duplicate_name
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileSource
from streambatch.connectors.tensors import is_tensor_type
from streambatch.connectors.wide_ints import KINDS, exact_kind, kinds_fitting, may_hold_wide_ints


class CSVSource(FileSource):
    """CSV files (``.csv``, optionally compressed: ``.csv.gz``, ``.csv.bz2`` ...).

    ``parse_options``, ``convert_options`` and ``read_options`` are pyarrow.csv's.
    """

    name = "CSV"
    who = "read_csv"
    suffixes = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
    in_memory_factor = 1.0
    error_hint = "check the delimiter and the header (pass parse_options=pyarrow.csv.ParseOptions(...))"

    def __init__(self, paths, *, parse_options=None, convert_options=None, read_options=None,
                 **kwargs) -> None:
        super().__init__(paths, **kwargs)
        self.parse_options, self.convert_options = parse_options, convert_options
        self.read_options = read_options

    def read_file(self, fs, entry, pushdowns):
        """Stream the file's record batches. A column of integers beyond int64 (which
        pyarrow infers as float64, rounding them) reads exactly: as uint64 when none is
        negative, else as decimal128(38, 0); beyond 38 digits it fails naming the file
        and the column (``wide_ints``). Columns typed in ``convert_options`` read as typed.

        >>> import fsspec, tempfile
        >>> from streambatch.connectors.file_based import FileEntry
        >>> path = tempfile.mkdtemp() + "/a.csv"
        >>> _ = open(path, "w").write("u,s\\n18446744073709551615,-1\\n1,9223372036854775809\\n")
        >>> [t.to_pydict() for t in CSVSource(path).read_file(fsspec.filesystem("file"), FileEntry(path, 0), None)]
        [{'u': [18446744073709551615, 1], 's': [Decimal('-1'), Decimal('9223372036854775809')]}]
        """
        import pyarrow.csv as pacsv

        # An unquoted empty field is null, a quoted one ("") the empty string, as
        # write_csv writes them, so nulls survive a round trip. Only that: pyarrow's
        # other null markers ("NA", "null", "N/A", "NaN"...) made text such as Namibia's
        # code "NA" null in string columns. (A number column holding "NA" reads as text,
        # as Polars reads it: pass convert_options=pyarrow.csv.ConvertOptions() for
        # pyarrow's markers.)
        convert = self.convert_options or pacsv.ConvertOptions(
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)
        parse = self.parse_options
        with fs.open(entry.path, "rb", compression="infer") as handle:
            reader = self._open(handle, parse, convert)
            _no_duplicate_names(reader.schema, entry.path)
            first = _first_of(reader)
            one_column = parse is None and first.num_columns == 1
            wide = {} if one_column else self._wide_int_types(fs, entry, parse, convert, first)
            if not (one_column or wide):  # the usual case: the file is read once
                if first.num_rows:
                    yield pa.Table.from_batches([first])
                for batch in reader:
                    yield pa.Table.from_batches([batch])
                return
        if one_column:  # a file of one column writes a null as an empty line: a row
            parse = pacsv.ParseOptions(ignore_empty_lines=False)
            first = self._first_batch(fs, entry, parse, convert)
            wide = self._wide_int_types(fs, entry, parse, convert, first)
        if wide:
            convert = copy.copy(convert)
            convert.column_types = {**dict(convert.column_types), **wide}
        with fs.open(entry.path, "rb", compression="infer") as handle:
            for batch in self._open(handle, parse, convert):
                yield pa.Table.from_batches([batch])

    def _open(self, handle, parse, convert):
        """pyarrow's incremental reader on ``handle`` with this source's read options."""
        import pyarrow.csv as pacsv

        return pacsv.open_csv(handle, read_options=self.read_options, parse_options=parse,
                              convert_options=convert)

    def _first_batch(self, fs, entry, parse, convert) -> pa.RecordBatch:
        """The file's first batch (empty, with the header's columns, when it has none):
        the one pyarrow infers the file's types from."""
        with fs.open(entry.path, "rb", compression="infer") as handle:
            return _first_of(self._open(handle, parse, convert))

    def _wide_int_types(self, fs, entry, parse, convert,
                        first: pa.RecordBatch) -> dict[str, pa.DataType]:
        """The exact types of the inferred float64 columns whose values are all integers
        as written, some beyond int64 (``wide_ints``): the first batch finds the
        candidates, a pass over the file reading them as text decides (it stops once
        every candidate has shown a number written as a float)."""
        typed = dict(convert.column_types)
        fitting = {f.name: list(KINDS) for f in first.schema
                   if pa.types.is_float64(f.type) and f.name not in typed
                   and may_hold_wide_ints(first.column(f.name))}
        if not fitting:
            return {}
        options = copy.copy(convert)
        options.include_columns, options.strings_can_be_null = list(fitting), True
        options.column_types = {name: pa.string() for name in fitting}
        with fs.open(entry.path, "rb", compression="infer") as handle:
            for batch in self._open(handle, parse, options):
                for name in list(fitting):
                    kinds = kinds_fitting(batch.column(name))
                    if kinds is None:
                        del fitting[name]  # floats as written
                    else:
                        fitting[name] = [k for k in fitting[name] if k in kinds]
                if not fitting:
                    break
        return {name: exact_kind(kinds, self.who, entry.path, name, _AS_TEXT.format(name))
                for name, kinds in fitting.items()}


_AS_TEXT = "pass convert_options=pyarrow.csv.ConvertOptions(column_types={{{!r}: pyarrow.string()}})"


def _no_duplicate_names(schema: pa.Schema, path: str) -> None:
    """A header naming a column twice is an error naming it (one of the two columns
    was dropped further on, silently; Polars refuses such a file too)."""
    twice = duplicate_name(schema.names)
    if twice is not None:
        raise ValueError(f"read_csv: {path!r} names the column {twice!r} twice in its header; "
                         "pass read_options=pyarrow.csv.ReadOptions(column_names=[...]) "
                         "with distinct names (and skip_rows=1)")


def _first_of(reader) -> pa.RecordBatch:
    """``reader``'s first batch (empty, with the header's columns, when it has none)."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return pa.RecordBatch.from_pylist([], schema=reader.schema)


class CSVSink(FileDatasink):
    """One CSV file (with a header) per partition.

    >>> import tempfile, fsspec
    >>> sink = CSVSink(tempfile.mkdtemp() + "/out"); _ = sink.start()
    >>> class Ctx: task_index = 0
    >>> sink.write([pa.table({"x": [1, 2]})], Ctx())["rows"].to_pylist()
    [2]
    """

    name = "CSV"
    suffix = ".csv"
    resumable = True  # write_*(resume=True) finishes an interrupted write

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write the tables to one CSV file; return (rows, bytes)."""
        import pyarrow.csv as pacsv

        rows = size = 0
        with self.fs.open(path, "wb") as handle:
            writer = header = schema = None
            for table in tables:
                check_flat(table, "write_csv")
                if header is not None:
                    table = in_header_order(table, header)
                if writer is None or table.schema != schema:
                    # a block of other types under the same header (a column all nulls
                    # in the first block): its own writer, values formatted as they are
                    if writer is not None:
                        writer.close()  # (not the file)
                    options = pacsv.WriteOptions(include_header=header is None)
                    writer = pacsv.CSVWriter(handle, table.schema, write_options=options)
                    header, schema = header or table.column_names, table.schema
                writer.write_table(table)
                rows, size = rows + table.num_rows, size + table.nbytes
            if writer is not None:
                writer.close()
        return rows, size


def in_header_order(table: pa.Table, header: list[str]) -> pa.Table:
    """``table``'s columns in the order of the file's header, or a ValueError naming the
    columns when they differ (a CSV file has one header).

    >>> in_header_order(pa.table({"b": [1], "a": [2]}), ["a", "b"]).column_names
    ['a', 'b']
    >>> in_header_order(pa.table({"a": [1], "c": [2]}), ["a", "b"])
    Traceback (most recent call last):
    ...
    ValueError: write_csv: a block has the columns ['a', 'c'] where the file's header has ['a', 'b'] (one CSV file has one header); give every row the same columns (select_columns, or a default in the function that makes them), or write_parquet, which starts a new file for them
    """
    if table.column_names == header:
        return table
    if sorted(table.column_names) != sorted(header):
        raise ValueError(
            f"write_csv: a block has the columns {table.column_names} where the file's header "
            f"has {header} (one CSV file has one header); give every row the same columns "
            f"(select_columns, or a default in the function that makes them), or "
            f"write_parquet, which starts a new file for them")
    return table.select(header)


def check_flat(table: pa.Table, who: str) -> None:
    """Refuse columns a text format cannot hold (tensors, lists, structs, binary).

    >>> check_flat(pa.table({"l": [[1]]}), "write_csv")
    Traceback (most recent call last):
    ...
    TypeError: write_csv: column 'l' has type list<item: int64>, which CSV cannot hold; write it with write_parquet or write_json, or drop_columns(['l']) first
    """
    for field in table.schema:
        t = field.type
        if (is_tensor_type(t) or pa.types.is_nested(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t) or isinstance(t, pa.BaseExtensionType)):
            raise TypeError(f"{who}: column {field.name!r} has type {t}, which CSV cannot hold; "
                            f"write it with {_holding(t)}, or drop_columns([{field.name!r}]) first")


def _holding(kind: pa.DataType) -> str:
    """The writers that hold a column of type ``kind`` (write_json refuses maps whose keys
    are not strings).

    >>> _holding(pa.map_(pa.int64(), pa.string())), _holding(pa.map_(pa.string(), pa.string()))
    ('write_parquet', 'write_parquet or write_json')
    """
    from streambatch.connectors.json import refused_map

    return "write_parquet" if refused_map(kind) is not None else "write_parquet or write_json"
