"""The wheel: every package folder installs inside ``streambatch``, the PEP 561 marker
ships, and a user's mypy checks their code against the installed annotations.

The wheel is built from a copy of the repository (so the build's own ``build/`` and
``*.egg-info`` stay out of the checkout) without build isolation (no network), installed
with ``--no-deps`` into a fresh venv that has nothing else, and mypy (this venv's) is
pointed at that venv with ``--python-executable``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Top-level folder -> where it lands in the wheel (pyproject.toml / setup.py).
ROOTS = {
    "streambatch": "streambatch",
    "operators": "streambatch/operators",
    "executor": "streambatch/executor",
    "connectors": "streambatch/connectors",
}
# Not part of a build: VCS and tool state, environments, earlier build outputs.
_SKIP_TOP = {"build", "dist", "bench-data", "out"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))}
    if Path(directory) == REPO:
        skipped |= {n for n in names if n.startswith(".") or n in _SKIP_TOP}
    return skipped


def _run(*args: str | Path, cwd: Path | None = None, env: dict | None = None,
         ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_ignore, symlinks=True)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", tmp / "dist", src)
    (found,) = (tmp / "dist").glob("streambatch-*.whl")
    return found


@pytest.fixture(scope="module")
def user_env(wheel: Path, tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the wheel (no pyarrow, no numpy)."""
    env = tmp_path_factory.mktemp("venv") / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", env)
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "-q", wheel)
    return python


def _packages_on_disk() -> dict[str, Path]:
    """Wheel path -> folder, for each folder that is a package: an __init__.py, in a package."""
    found = {}
    for folder, target in ROOTS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if "__pycache__" in rel.parts:
                continue
            chain = [root.joinpath(*rel.parts[:i]) for i in range(len(rel.parts))]
            if all((d / "__init__.py").is_file() for d in chain):
                found["/".join((target, *rel.parts))] = init.parent
    return found


def test_wheel_holds_every_package_and_py_typed(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "streambatch/py.typed" in names
    in_wheel = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    on_disk = _packages_on_disk()
    assert {"streambatch", "streambatch/executor/backends", "streambatch/operators/rules",
            "streambatch/connectors/lookup"} <= set(on_disk)
    assert in_wheel == set(on_disk)
    # ... with every module of each package, and nothing at the top level but streambatch.
    modules = {f"{package}/{f.name}" for package, folder in on_disk.items()
               for f in folder.glob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"streambatch"}


def _mypy(user_env: Path, script: Path) -> subprocess.CompletedProcess:
    work = script.parent
    config = work / "mypy.ini"  # not the repository's [tool.mypy]: a user's plain mypy
    config.write_text("[mypy]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return _run(sys.executable, "-m", "mypy", "--config-file", config, "--cache-dir",
                work / ".mypy_cache", "--python-executable", user_env, "--no-error-summary",
                "--show-error-codes", script.name, cwd=work, env=env, ok=False)


def test_users_mypy_sees_the_annotations(user_env: Path, tmp_path: Path):
    # The installed package, not the checkout: the user's directory has no streambatch/.
    where = _run(user_env, "-c", "import importlib.util as u; "
                 "print(u.find_spec('streambatch').origin)", cwd=tmp_path).stdout
    assert "site-packages" in where and str(REPO) not in where, where

    good = tmp_path / "good.py"
    good.write_text("import streambatch as sb\n\nn: int = sb.range(3).count()\n")
    proc = _mypy(user_env, good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout

    bad = tmp_path / "bad.py"
    bad.write_text("import streambatch as sb\n\nn: str = sb.range(3).count()\n")
    proc = _mypy(user_env, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bad.py:3: error: Incompatible types in assignment" in proc.stdout, proc.stdout
    assert '(expression has type "int", variable has type "str")' in proc.stdout, proc.stdout
    assert "[assignment]" in proc.stdout
    assert "py.typed" not in proc.stdout and "import-untyped" not in proc.stdout, proc.stdout
