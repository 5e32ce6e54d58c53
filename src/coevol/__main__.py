"""``coevol`` and ``python -m coevol``: the stop handlers first, then the command line.

Importing the CLI takes a moment; a Ctrl-C or SIGTERM in that moment (or before a command installs
its own handlers, or after it removed them) would otherwise print a traceback or end the process
with no word. Then a signal prints one line and exits 130 (SIGINT) or 143 (SIGTERM): nothing is
half-written that a rerun does not finish, exactly as after ``kill -9``.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

__all__ = ["main", "stop_early"]

_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def stop_early(signum: int, frame: FrameType | None) -> None:
    """Outside a command's own handlers: one line and the conventional exit code, no traceback."""
    word = _WORDS.get(signal.Signals(signum), "stopped")
    os.write(2, f"{word}; rerun the same command to resume\n".encode())
    os._exit(128 + signum)


def main() -> int:
    for sig in _WORDS:
        signal.signal(sig, stop_early)
    from coevol.cli.main import main as cli_main

    try:
        return cli_main()
    finally:
        # The command is over, its files written: the interpreter's shutdown that follows resets
        # Python-level handlers to the default, so a signal then would end it as -15 with no word.
        for sig in _WORDS:
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    raise SystemExit(main())
