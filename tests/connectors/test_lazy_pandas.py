"""Reading parquet does not import pandas (pyarrow.dataset's import-time probe would cost
0.3-0.8 s of a loader's first batch), and pandas conversions still work afterwards."""

from __future__ import annotations

import subprocess
import sys
import threading


def run_after_a_parquet_read(tmp_path, code: str) -> str:
    """Run ``code`` in a fresh interpreter after ``sb.read_parquet`` of a 3-row file
    (``path`` names the file's directory); its stdout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "a.parquet")
    script = (f"import sys\nimport streambatch as sb\npath = {str(tmp_path)!r}\n"
              "rows = sb.read_parquet(path).take_all()\n" + code)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_reading_parquet_does_not_import_pandas_and_to_pandas_still_works(tmp_path):
    out = run_after_a_parquet_read(tmp_path, (
        "print(len(rows), 'pandas' in sys.modules)\n"
        "df = sb.read_parquet(path).to_arrow().to_pandas()\n"
        "print(type(df).__name__, int(df['x'].sum()))\n"))
    assert out.split() == ["3", "False", "DataFrame", "6"]


def test_only_the_importing_thread_has_pandas_refused():
    from streambatch.connectors.lazy_pandas import _RefusePandasHere

    finder = _RefusePandasHere(threading.get_ident())
    seen = {}
    other = threading.Thread(target=lambda: seen.update(other=finder.find_spec("pandas")))
    other.start()
    other.join()
    assert seen == {"other": None}
    try:
        finder.find_spec("pandas.core")
    except ImportError as exc:
        assert "deferred" in str(exc)
    else:
        raise AssertionError("the importing thread's pandas import was not refused")


def test_pyarrow_sees_pandas_imported_after_a_parquet_read(tmp_path):
    """The refused import made pyarrow note pandas as missing; its type checks (here
    ``pa.array`` of a nullable pandas Series) must still see pandas once it is imported."""
    out = run_after_a_parquet_read(tmp_path, (
        "assert len(rows) == 3 and 'pandas' not in sys.modules\n"
        "import pandas as pd, pyarrow as pa\n"
        "arr = pa.array(pd.Series(pd.array([1, None, 3], dtype='Int64')))\n"
        "print(arr.type, arr.null_count, arr.to_pylist())\n"
        "df = pd.DataFrame({'i': pd.array([4, None], dtype='Int64')})\n"
        "print(sb.from_pandas(df).to_pandas()['i'].dtype)\n"))
    assert out.split("\n")[:2] == ["int64 1 [1, None, 3]", "Int64"]
