"""``coevol compare``: an independent, position-balanced pairwise check of two versions of a dataset.

``units`` matches rows (by id or position) and lists the response pairs, ``decide`` applies Eq. 4
or MT-Bench's conservative rule and the 95% interval, ``result`` builds the ``coevol.compare/1``
document, ``run`` drives the judge on the engine, ``dryrun`` estimates the calls. All but ``run``
are pure.
"""

from __future__ import annotations

from coevol.compare.decide import Outcome, Rule, Tally, wilson_interval
from coevol.compare.result import COMPARE_SCHEMA
from coevol.compare.run import CompareRun, acompare_files, compare_files

__all__ = [
    "COMPARE_SCHEMA",
    "CompareRun",
    "Outcome",
    "Rule",
    "Tally",
    "acompare_files",
    "compare_files",
    "wilson_interval",
]
