"""Text: a row per line of each file, in column ``text``.

>>> import tempfile
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.txt", "w").write("one\\n\\ntwo\\n")
>>> [t["text"].to_pylist() for task in TextSource(d).read_tasks(1, Pushdowns()) for t in task()]
[['one', 'two']]
"""

from __future__ import annotations

import pyarrow as pa
from streambatch.connectors.file_based import FileSource


class TextSource(FileSource):
    """Text files decoded with ``encoding``; ``drop_empty_lines`` (default True, as
    in Ray Data) skips blank lines. Lines keep no trailing newline."""

    name = "Text"
    who = "read_text"
    suffixes = None
    in_memory_factor = 1.5
    error_hint = "pass encoding= if the file is not UTF-8"

    def __init__(self, paths, *, encoding: str = "utf-8", drop_empty_lines: bool = True,
                 **kwargs) -> None:
        super().__init__(paths, **kwargs)
        self.encoding, self.drop_empty_lines = encoding, drop_empty_lines

    def read_file(self, fs, entry, pushdowns):
        """The file's lines as one table."""
        with fs.open(entry.path, "rb", compression="infer") as handle:
            text = handle.read().decode(self.encoding)
        lines = text.splitlines()
        if self.drop_empty_lines:
            lines = [line for line in lines if line.strip()]
        yield pa.table({"text": pa.array(lines, pa.string())})
