"""The ``write_*`` methods of ``Dataset``: each builds its sink and runs the plan through
it (the sink owns the write: start, the job, then finalize or abort)."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import pyarrow as pa

from streambatch.operators import logical as L
from streambatch.session import plan_fingerprint


class WriteMethods:
    """Mixed into ``Dataset``."""

    _plan: Any  # the dataset's logical plan (Dataset sets it)
    _stats: Any
    _dead: Any

    def _with(self, op) -> Any:  # provided by Dataset
        raise NotImplementedError

    def write_parquet(self, path: str, *, filesystem=None, mode: str = "error",
                      resume: bool = False, partition_cols=None,
                      target_file_bytes: int | None = None) -> list[dict]:
        """Write one parquet file per partition under ``path``; ``_SUCCESS`` marks completion.

        Returns the committed files (path, rows, bytes). Files are committed
        atomically and recorded in ``_manifest.jsonl``; a retried task never adds a
        second file. ``resume=True`` finishes a job whose driver was killed: its
        committed files are kept and the reads they cover are skipped. On an error
        the files of this job are removed and no ``_SUCCESS`` is written.
        ``partition_cols`` writes hive ``col=value/`` directories; ``target_file_bytes``
        starts a new file when one reaches that size.

        >>> import streambatch as sb, tempfile
        >>> out = tempfile.mkdtemp() + "/out"
        >>> sum(f["rows"] for f in sb.range(10).write_parquet(out))
        10
        """
        from streambatch.connectors.parquet_sink import ParquetSink

        return self._write(ParquetSink(path, filesystem=filesystem, mode=mode,
                                       partition_cols=partition_cols,
                                       target_file_bytes=target_file_bytes), resume)

    def write_csv(self, path: str, *, filesystem=None, mode: str = "error") -> list[dict]:
        """Write one CSV file (with a header) per partition; see ``write_parquet``.

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_csv(tempfile.mkdtemp() + "/o"))
        4
        """
        from streambatch.connectors.registry import get_sink

        return self._write(get_sink("csv")(path, filesystem=filesystem, mode=mode))

    def write_json(self, path: str, *, filesystem=None, mode: str = "error") -> list[dict]:
        """Write one JSON-lines file per partition; see ``write_parquet``.

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_json(tempfile.mkdtemp() + "/o"))
        4
        """
        from streambatch.connectors.registry import get_sink

        return self._write(get_sink("json")(path, filesystem=filesystem, mode=mode))

    def write_numpy(self, path: str, *, column: str, filesystem=None,
                    mode: str = "error") -> list[dict]:
        """Write ``column`` of each partition to one ``.npy`` file (tensor columns as n-d arrays).

        >>> import streambatch as sb, tempfile
        >>> sum(f["rows"] for f in sb.range(4).write_numpy(tempfile.mkdtemp() + "/o", column="id"))
        4
        """
        from streambatch.connectors.registry import get_sink

        return self._write(get_sink("numpy")(path, column=column, filesystem=filesystem, mode=mode))

    def write_images(self, path: str, *, column: str, file_format: str = "png",
                     filename_column: str | None = None, filesystem=None,
                     mode: str = "error") -> list[dict]:
        """Write one image file per row from tensor column ``column``, named from
        ``filename_column`` when given. Needs ``pip install 'streambatch[images]'``.

        >>> import streambatch as sb, tempfile, numpy as np
        >>> ds = sb.from_numpy(np.zeros((2, 4, 4, 3), np.uint8))
        >>> len(ds.write_images(tempfile.mkdtemp() + "/o", column="data"))
        2
        """
        from streambatch.connectors.registry import get_sink

        return self._write(get_sink("images")(path, column=column, file_format=file_format,
                                              filename_column=filename_column,
                                              filesystem=filesystem, mode=mode))

    def _write(self, sink, resume: bool = False) -> list[dict]:
        write = self._with(L.Write(self._plan, sink=sink))

        def execute(listener, done) -> list[pa.Table]:
            with closing(write._partitions(listener=listener, done=done)) as parts:
                return [p.get() for p in parts]

        try:
            return sink.run_job(execute, plan_fingerprint(self._plan), resume)
        finally:
            self._stats = write._stats
            self._dead = sink.dead_letter_rows()
