"""Optional dependencies, checked before a run creates a file or sends a request (issue 16).

A missing extra found half-way through a run used to leave a store and a lock behind and print an
empty summary under the install line. ``check_extras`` looks for every extra a run will import,
from the paths and the kind of model alone, so a refused run prints one line and touches nothing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from coevol.errors import MissingExtra

__all__ = ["check_extras", "require"]


def require(module: str, feature: str, extra: str) -> None:
    """Raise ``MissingExtra`` naming ``pip install 'coevol[EXTRA]'`` when ``module`` cannot be imported."""
    if module in sys.modules:  # imported already (or stubbed out with None)
        found = sys.modules[module] is not None
    else:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing
            found = False
    if not found:
        raise MissingExtra(feature, extra)


def _is_hub(path: Path | str) -> bool:
    return os.fspath(path).startswith(("hf://", "hf:/"))


def check_extras(paths: Iterable[Path | str | None], *, embedded: bool) -> None:
    """Every extra the run will need: Parquet for a ``.parquet`` input or output, ``datasets`` for a
    Hub id or a ``save_to_disk`` folder, llama.cpp when a role runs on the embedded model."""
    for path in paths:
        if path is None:
            continue
        if _is_hub(path) or Path(path).is_dir():
            require("datasets", "Hugging Face datasets", "datasets")
        elif Path(path).suffix.lower() == ".parquet":
            require("pyarrow", "Parquet files", "parquet")
    if embedded:
        require("llama_cpp", "the embedded model", "local")
