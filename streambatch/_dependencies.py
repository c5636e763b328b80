"""Optional dependencies: one way to import them, with the pip command in the error.

>>> import_optional("json").__name__
'json'
>>> import_optional("definitely_not_installed_pkg", extra="polars", what="to_polars()")
Traceback (most recent call last):
...
ImportError: to_polars() needs 'definitely_not_installed_pkg': pip install 'streambatch[polars]'
"""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(name: str, *, extra: str | None = None, pip: str | None = None,
                    what: str = "this") -> ModuleType:
    """Import ``name``, or raise an ImportError saying what needs it (``what``) and the
    command that installs it: ``pip`` as given, else the streambatch ``extra``, else
    ``pip install <name>``."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        command = pip or (f"pip install 'streambatch[{extra}]'" if extra else
                          f"pip install {name.split('.')[0]}")
        raise ImportError(f"{what} needs {name!r}: {command}") from exc
