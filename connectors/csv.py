"""CSV: a source streaming each file through pyarrow's incremental reader, and a sink
writing one CSV file per partition.

>>> import tempfile, pyarrow as pa
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.csv", "w").write("x,y\\n1,a\\n2,b\\n")
>>> [t.to_pydict() for task in CSVSource(d).read_tasks(1, Pushdowns()) for t in task()]
[{'x': [1, 2], 'y': ['a', 'b']}]
"""

from __future__ import annotations

import pyarrow as pa
from streambatch.connectors.datasink import FileDatasink
from streambatch.connectors.file_based import FileSource
from streambatch.connectors.tensors import is_tensor_type


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
        """Stream the file's record batches."""
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
        if parse is None and self._columns_in(fs, entry, convert) == 1:
            # a file of one column writes a null as an empty line: a row, not a gap
            parse = pacsv.ParseOptions(ignore_empty_lines=False)
        with fs.open(entry.path, "rb", compression="infer") as handle:
            reader = pacsv.open_csv(handle, read_options=self.read_options,
                                    parse_options=parse, convert_options=convert)
            for batch in reader:
                yield pa.Table.from_batches([batch])

    def _columns_in(self, fs, entry, convert) -> int:
        """The number of columns the file's header (or ``read_options``) names."""
        import pyarrow.csv as pacsv

        with fs.open(entry.path, "rb", compression="infer") as handle:
            return len(pacsv.open_csv(handle, read_options=self.read_options,
                                      convert_options=convert).schema)


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
                            f"write it with write_parquet or write_json, or "
                            f"drop_columns([{field.name!r}]) first")
