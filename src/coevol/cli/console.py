"""Printing to the terminal without letting data or a server drive it.

Everything shown here is built as ``rich.text.Text`` (never parsed as console markup, so ``[/b]``
cannot raise and ``[parquet]`` is not eaten) from strings passed through ``textsafe.inert_line``
(so escape sequences from a row, a path or a server's error body are shown, not obeyed).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
import traceback
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.text import Text

from coevol.textsafe import inert, inert_line

__all__ = [
    "DEBUG_ENV",
    "debug_enabled",
    "describe_os_error",
    "describe_unexpected",
    "error_text",
    "print_error",
    "signal_handled",
    "stderr_console",
    "term_cancels",
]

DEBUG_ENV = "COEVOL_DEBUG"
"""Set to 1 to see the traceback of an internal error (a bug) instead of the one-line report."""


def stderr_console() -> Console:
    """The console for progress, summaries and errors: stderr, no automatic highlighting."""
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def signal_handled(signum: int, handler: Callable[[], object]) -> Iterator[None]:
    """``handler`` runs in the event loop on ``signum`` while inside; on the way out the handler
    from before comes back (asyncio would restore the default instead, and then a SIGTERM while the
    summary prints would no longer exit 143)."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signum)
    loop.add_signal_handler(signum, handler)
    try:
        yield
    finally:
        loop.remove_signal_handler(signum)
        signal.signal(signum, previous)


def term_cancels(terminated: list[int]) -> Callable[[], None]:
    """A SIGTERM handler that cancels the running task and notes the signal in ``terminated``, so
    the command can tell a termination (exit 143) from an interrupt (130)."""
    task = asyncio.current_task()

    def on_sigterm() -> None:
        terminated.append(signal.SIGTERM)
        if task is not None:
            task.cancel()

    return on_sigterm


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_text(message: str) -> Text:
    """``error: MESSAGE``, each line made inert; multi-line messages (config problems) stay lines."""
    lines = [inert_line(line) for line in message.splitlines() or [""]]
    return Text.assemble(("error: ", "bold red"), "\n".join(lines))


def print_error(console: Console, message: str) -> None:
    console.print(error_text(message), highlight=False, soft_wrap=True)


_OS_ADVICE = {
    errno.ENOSPC: "free some space, then rerun the same command to resume",
    errno.EDQUOT: "free some space, then rerun the same command to resume",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.EACCES: "check the folder's permissions, or choose another output folder",
    errno.EPERM: "check the folder's permissions, or choose another output folder",
}


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: what, on which file, and what to do."""
    what = exc.strerror or type(exc).__name__
    where = f": {exc.filename}" if exc.filename is not None else ""
    advice = _OS_ADVICE.get(exc.errno or 0)
    return f"{what}{where}" + (f" ({advice})" if advice else "")


def describe_unexpected(exc: BaseException) -> str:
    """The line for an error that is not coevol's own (sqlite, recursion) or a genuine bug."""
    if isinstance(exc, sqlite3.Error):
        return (
            f"the run store could not be used ({type(exc).__name__}: {exc}); if the .coevol.db file "
            "is damaged, move it away and rerun (finished calls in it are then sent again)"
        )
    if isinstance(exc, RecursionError):
        return "data nested too deeply to process (a hostile or broken row?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return (
        f"internal error, please report it: {type(exc).__name__}: {exc} "
        f"(set {DEBUG_ENV}=1 to see the traceback)"
    )


def print_traceback(console: Console, exc: BaseException) -> None:
    """The traceback, made inert (an exception message may quote data), for ``COEVOL_DEBUG=1``."""
    text = "".join(traceback.format_exception(exc))
    console.print(Text(inert(text)), highlight=False, soft_wrap=True)
