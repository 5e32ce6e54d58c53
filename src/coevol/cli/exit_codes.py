"""The CLI's exit codes, in one place (the README documents them)."""

from __future__ import annotations

__all__ = ["EXIT_BUDGET", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BUDGET = 3
EXIT_INTERRUPTED = 130
