"""The CLI's exit codes, in one place (the README documents them)."""

from __future__ import annotations

__all__ = [
    "EXIT_BUDGET",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_JUDGE_POSITION",
    "EXIT_JUDGE_UNUSABLE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "judge_check_exit",
]

EXIT_OK = 0  # every row refined or kept (rejected rows are listed in the rejects file)
EXIT_ERROR = 1  # the run was refused or stopped by an error
EXIT_BUDGET = 3  # --max-errors or --max-budget reached: a clean stop, rerun to resume
EXIT_PARTIAL = 4  # the run completed but some samples failed: rerun with --retry-failed
EXIT_JUDGE_POSITION = 5  # judge-check (or --judge-check): the judge is position-driven; nothing refined
EXIT_JUDGE_UNUSABLE = 6  # judge-check (or --judge-check): the judge is unusable; nothing refined
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM


def judge_check_exit(verdict: str) -> int:
    """The exit code of a judge check's verdict ("usable", "position-driven", "unusable")."""
    return {"usable": EXIT_OK, "position-driven": EXIT_JUDGE_POSITION}.get(verdict, EXIT_JUDGE_UNUSABLE)
