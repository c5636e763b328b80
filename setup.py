"""Package discovery for the `streambatch` namespace (everything else is in pyproject.toml).

The engine folders live at the top level but install inside the `streambatch` namespace:
streambatch/ -> streambatch, operators/ -> streambatch.operators, executor/ ->
streambatch.executor, connectors/ -> streambatch.connectors. Every folder below these roots
that holds an __init__.py is a package, so a new subpackage needs no edit here.
"""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent

# Top-level folder -> the package it installs as.
ROOTS = {
    "streambatch": "streambatch",
    "operators": "streambatch.operators",
    "executor": "streambatch.executor",
    "connectors": "streambatch.connectors",
}


def discover() -> tuple[list[str], dict[str, str]]:
    """The packages under ROOTS and where each one's folder is (relative, '/'-separated)."""
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for folder, name in ROOTS.items():
        root = HERE / folder
        for init in sorted(root.rglob("__init__.py")):
            parts = init.parent.relative_to(root).parts
            # Only folders reachable through packages: a folder whose parent has no
            # __init__.py is not importable as a subpackage.
            if any(not (root.joinpath(*parts[:i]) / "__init__.py").is_file()
                   for i in range(len(parts))):
                continue
            if any(p == "__pycache__" or p.startswith(".") for p in parts):
                continue
            package = ".".join((name, *parts))
            packages.append(package)
            package_dir[package] = "/".join((folder, *parts))
    return packages, package_dir


packages, package_dir = discover()
setup(packages=packages, package_dir=package_dir)
