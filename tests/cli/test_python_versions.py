"""Job files are read on Python 3.10 too, where the standard library has no ``tomllib``.

Python 3.10 is simulated: ``sys.version_info`` reads (3, 10) and ``tomllib`` cannot be
imported, so the job-file reader must fall back to the ``tomli`` package.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streambatch.cli import main
from streambatch.jobspec import JobSpec, JobSpecError, load_toml_module

PY310 = (3, 10, 13, "final", 0)

JOB = """\
[source]
format = "csv"
path = "in/"
columns = ["id", "text"]

[[stages]]
fn = "math:sqrt"
batch_size = 64
concurrency = "1,4"

[sink]
path = "out/"

[execution]
memory_budget = "512MiB"
"""


@pytest.fixture
def python310(monkeypatch):
    """This interpreter as Python 3.10 sees it: version (3, 10) and no ``tomllib``."""
    tomli = pytest.importorskip(
        "tomli", reason="tomli is not installed (pip install tomli: it is in the dev extra)")
    monkeypatch.setattr(sys, "version_info", PY310)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ImportError
    return tomli


def test_python310_reads_toml_with_tomli(python310):
    toml = load_toml_module()
    assert toml is python310
    assert toml.loads('name = "job"\nsizes = [1, 2]\n[t]\nx = 1.5') == {
        "name": "job", "sizes": [1, 2], "t": {"x": 1.5}}


def test_python310_reads_a_job_file(python310, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(JOB)
    spec = JobSpec.from_toml(str(path))
    assert spec.source == {"format": "csv", "path": "in/", "columns": ["id", "text"]}
    assert spec.stages == [{"fn": "math:sqrt", "kind": "map_batches", "batch_size": 64,
                            "batch_format": "numpy",
                            "concurrency": (1, 4)}]
    assert spec.sink == {"path": "out/", "format": "parquet"}
    assert spec.execution == {"memory_budget": 512 * 2**20}


def test_python310_reports_bad_toml(python310, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[source\npath = 1\n")
    with pytest.raises(JobSpecError, match="is not valid TOML"):
        JobSpec.from_toml(str(path))


def test_python310_without_tomli_says_what_to_install(monkeypatch):
    monkeypatch.setattr(sys, "version_info", PY310)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="needs 'tomli': pip install 'tomli>=1.1'"):
        load_toml_module()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_python311_uses_the_standard_library():
    import tomllib

    assert load_toml_module() is tomllib


def test_import_streambatch_loads_no_toml_reader():
    code = textwrap.dedent("""
        import sys
        import streambatch
        print(sorted(m for m in ("tomllib", "tomli", "streambatch.jobspec") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_python310_cli_run_reads_the_job_file(python310, tmp_path, capsys):
    path = tmp_path / "job.toml"
    path.write_text(JOB.replace('path = "out/"', 'pth = "out/"'))
    assert main(["run", str(path)]) == 2
    assert "unknown field 'sink.pth' (did you mean 'path'?)" in capsys.readouterr().err
