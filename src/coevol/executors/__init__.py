"""Where a file run executes: in this process (``local``), or as shards on Ray (``ray``)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["file_runner"]


def file_runner(ns: argparse.Namespace) -> Callable[..., Awaitable[Any]]:
    """``arefine_file``, or its Ray twin with the command's ``--ray-*`` options."""
    if getattr(ns, "executor", "local") != "ray":
        from coevol.api import arefine_file

        return arefine_file
    from coevol.executors.on_ray import RayOptions, arefine_file_ray, import_ray

    import_ray()  # the install line before anything else is done
    options = RayOptions(
        address=ns.ray_address, work_dir=ns.work_dir, workers=ns.ray_workers, shard_rows=ns.shard_rows
    )
    return functools.partial(arefine_file_ray, options=options)
