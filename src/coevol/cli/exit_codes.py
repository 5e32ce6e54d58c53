"""The CLI's exit codes, in one place (the README documents them)."""

from __future__ import annotations

__all__ = ["EXIT_BUDGET", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PARTIAL", "EXIT_TERMINATED"]

EXIT_OK = 0  # every row refined or kept (rejected rows are listed in the rejects file)
EXIT_ERROR = 1  # the run was refused or stopped by an error
EXIT_BUDGET = 3  # --max-errors or --max-budget reached: a clean stop, rerun to resume
EXIT_PARTIAL = 4  # the run completed but some samples failed: rerun with --retry-failed
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM
