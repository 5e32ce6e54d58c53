"""``coevol judge-check``: is this judge good enough to refine with? Measured before anything is spent.

``metrics`` holds the figures and the verdict (pure); ``run`` asks the judge on the built-in pairs
(``data/pairs.jsonl``: wrong versus corrected answers, truncated versus complete, off-topic versus
on-topic, and pairs whose better answer is the shorter one).
"""

from __future__ import annotations

from coevol.judge_check.metrics import CheckPair, CheckResult, JudgeVerdict, summarize
from coevol.judge_check.run import JudgeCheckFailed, acheck_judge, check_judge, guard, load_pairs

__all__ = [
    "CheckPair",
    "CheckResult",
    "JudgeCheckFailed",
    "JudgeVerdict",
    "acheck_judge",
    "check_judge",
    "guard",
    "load_pairs",
    "summarize",
]
