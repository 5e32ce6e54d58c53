"""``coevol report``: the paper's analyses (Fig. 2a, 2b, 3), a judge audit and a per-sample viewer.

Pure statistics over typed trace records (``stats``), the offline tokenizer (``tokenize``), the
verb-object extraction (``directions``), the SVG figures and the page (``figures``, ``page``);
``reader`` and ``build`` are the I/O that streams a run's files through them.
"""

from __future__ import annotations

from coevol.audit import JudgeAudit, judge_finding
from coevol.report.stats import REPORT_SCHEMA, ReportBuilder

__all__ = ["REPORT_SCHEMA", "JudgeAudit", "ReportBuilder", "judge_finding"]
