"""Where a report is written and what it must never replace: shared by ``coevol report`` for a run
and for a compare result (``cli.report`` and ``cli.compare`` both import it, never each other)."""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

from coevol.errors import OutputError
from coevol.io.guard import check_derived
from coevol.textsafe import inert_line

__all__ = ["check_report_targets", "open_hint", "report_paths"]

_JSON_HEAD = re.compile(rb'^\s*\{\s*"schema"\s*:\s*"coevol\.report/1"')
_PAGE_HEAD = re.compile(
    rb'^<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy"'
)


def report_paths(output: Path, out: Path | None, run_dir: Path | None = None) -> tuple[Path, Path]:
    """(page, JSON) paths for ``output`` and an optional ``-o``; a run folder holds them by default."""
    if out is None and run_dir is not None:
        return run_dir / "report.html", run_dir / "report.json"
    if out is None:
        return output.with_name(output.name + ".report.html"), output.with_name(output.name + ".report.json")
    if out.suffix.lower() in (".html", ".htm"):
        return out, out.with_suffix(".json")
    return out, out.with_name(out.name + ".json")


def _written_by_us(path: Path, head: re.Pattern[bytes]) -> bool:
    """Whether ``path`` is absent or a regular file a previous report wrote (read from its first
    bytes; a FIFO or a link is never opened)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    if not stat.S_ISREG(mode):
        return False
    try:
        with path.open("rb") as f:
            return head.match(f.read(256)) is not None
    except OSError:
        return False


def check_report_targets(page: Path, doc: Path | None, reads: dict[str, Path]) -> None:
    """Refuse, before anything is written, a page or JSON that would replace a file the report reads,
    a file of a running job, or any existing file that a report did not write (the run's input,
    its refined output, a comparison's baseline ...)."""
    writes = {"the page": page, **({"the JSON document": doc} if doc is not None else {})}
    check_derived(writes, reads)
    targets: list[tuple[str, Path, re.Pattern[bytes]]] = [("the page", page, _PAGE_HEAD)]
    if doc is not None:
        targets.append(("the JSON document", doc, _JSON_HEAD))
    for what, path, head in targets:
        if not _written_by_us(path, head):
            raise OutputError(
                f"refusing to write {what} {path}: that file exists and is not a coevol report "
                "(it may be data); remove it or give -o another NAME.html"
            )


def open_hint(page: Path) -> str:
    """The line that says how to open the page, its name quoted for a shell."""
    quoted = inert_line(shlex.quote(str(page)))
    return f"open it with: xdg-open {quoted}  (or any browser; it needs no network)"
