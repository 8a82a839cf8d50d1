"""Package attributes imported on first use (PEP 562).

A package whose public names live in submodules that import torch lists them here, so that
its torch-free submodules (the settings and presets the command line reads) can be imported
without pulling torch in.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """``__getattr__`` and ``__dir__`` for ``package``: each public name is read from its
    submodule (``exports``: name -> submodule) on first use and kept in ``namespace``."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
