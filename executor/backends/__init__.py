"""Backends: the only code that knows where tasks run.

>>> from streambatch.executor.backends import available_backends
>>> "local" in available_backends()
True
"""

from __future__ import annotations

import importlib

_BACKENDS = {
    "local": ("streambatch.executor.backends.local", "LocalBackend", ""),
    "ray": ("streambatch.executor.backends.ray", "RayBackend", 'pip install "streambatch[ray]"'),
}


def available_backends() -> list[str]:
    """Names accepted by ``streambatch.init(backend=...)``."""
    return sorted(_BACKENDS)


def backend_class(name: str):
    """Look up a backend class by name, importing it lazily.

    >>> backend_class("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown backend 'nope'; expected one of: local, ray
    """
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of: {', '.join(available_backends())}")
    module, attr, hint = _BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:  # pragma: no cover - optional backends
        raise ImportError(f"backend {name!r} needs extra packages: {hint}") from exc
