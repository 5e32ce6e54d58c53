"""The run folder (``--run-dir``): every side file of one run in one folder, the output elsewhere.

A folder is refused before anything is created when it is a link or a file, when it holds another
output's run (its ``run.json`` says which output it belongs to), or when the output or ``--pairs``
would be one of its files. It is created only once every other check has passed, and its record
is written under the run lock, so two runs can never both claim it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import orjson

from coevol.errors import DataError, OutputError
from coevol.io.guard import check_not_links, regular_file
from coevol.io.writers import write_whole

__all__ = ["MARKER_SCHEMA", "check_run_dir", "claim_run_dir", "read_marker", "record_run_dir"]

MARKER_SCHEMA = "coevol.run/1"
_MAX_MARKER = 64 * 1024


def read_marker(marker: Path) -> Path | None:
    """The output a run folder's record names, or None when there is no record.

    A record that is not a regular file or not coevol's is refused: the folder is then not ours
    to write into."""
    try:
        os.lstat(marker)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot read {marker}: {exc.strerror or exc}") from None
    if os.path.islink(marker):
        raise OutputError(f"refusing to use {marker}: it is a symbolic link, and coevol never follows links")
    try:
        regular_file(marker, "run folder record")  # a FIFO would hang the read
        with marker.open("rb") as f:
            data = orjson.loads(f.read(_MAX_MARKER))
    except DataError as exc:
        raise OutputError(str(exc)) from None
    except (OSError, orjson.JSONDecodeError):
        data = None
    if (
        not isinstance(data, dict)
        or data.get("schema") != MARKER_SCHEMA
        or not isinstance(data.get("output"), str)
    ):
        raise OutputError(
            f"refusing to use the run folder {marker.parent}: its {marker.name} is not coevol's "
            "(remove it, or give another --run-dir)"
        )
    return Path(data["output"])


def check_run_dir(run_dir: Path, output: Path, pairs: Path | None, files: dict[str, Path]) -> None:
    """Refuse a run folder that is a link or a file, holds another output's run, or would hold
    the output or ``--pairs`` among its own files. Creates nothing."""
    try:
        mode: int | None = os.lstat(run_dir).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"refusing to use the run folder {run_dir}: {exc.strerror or exc}") from None
    if mode is not None and stat.S_ISLNK(mode):
        raise OutputError(
            f"refusing to use the run folder {run_dir}: it is a symbolic link, and coevol never "
            "writes through links. Give the folder itself"
        )
    if mode is not None and not stat.S_ISDIR(mode):
        raise OutputError(f"refusing to use the run folder {run_dir}: it is a file, not a folder")
    written = {"the output": output, **({"--pairs": pairs} if pairs is not None else {})}
    for what, path in written.items():
        if os.path.realpath(path) == os.path.realpath(run_dir):
            raise OutputError(f"refusing to run: {what} {path} is the run folder")
        for name, file in files.items():
            if os.path.realpath(path) == os.path.realpath(file):
                raise OutputError(f"refusing to run: {what} {path} is {name} in the run folder")
    if mode is not None:  # a link planted at any of its names is refused before the lock is taken
        names = [*files.values(), *(run_dir / f"coevol.db{s}" for s in ("-wal", "-shm", "-journal"))]
        check_not_links([*names, run_dir / "pairs.lock"])
    owner = read_marker(run_dir / "run.json") if mode is not None else None
    if owner is not None and os.path.realpath(owner) != os.path.realpath(output):
        raise OutputError(
            f"refusing to use the run folder {run_dir}: it holds the run of {owner}; "
            "give another --run-dir for this output"
        )
    if mode is None:
        parent = _existing_parent(run_dir)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create the run folder {run_dir}: {parent} is not writable")


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def claim_run_dir(run_dir: Path) -> None:
    """Create the run folder (and its parents) when missing; called once every check has passed."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}") from None
    if os.path.islink(run_dir) or not run_dir.is_dir():  # replaced since the check
        raise OutputError(f"refusing to use the run folder {run_dir}: it is no longer a folder")


def record_run_dir(marker: Path, output: Path, pairs: Path | None) -> None:
    """Write the folder's record (under the run lock): which output, so that ``coevol report DIR``
    finds it and another output's run is refused."""
    data = {
        "schema": MARKER_SCHEMA,
        "output": os.path.abspath(output),
        "pairs": os.path.abspath(pairs) if pairs is not None else None,
    }
    partial = marker.with_name(marker.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # a record cut short by a crash; never followed (unlink removes a link)
    write_whole(marker, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n", partial)
