"""The dataset card pushed with a refined split (``--push-to-hub``): what was done and what it gave.

Pure: the report document (``coevol.report/1``) and the run's settings in, Markdown with YAML front
matter out. The card has no links (a reader need not trust any), records the method, the model of
each role, the settings and the report's statistics (Fig. 2a, Fig. 2b, the judge audit), and leaves
the license to the data's owner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from coevol.audit import judge_finding

__all__ = ["dataset_card"]

_METHOD = (
    "The responses were refined with coevol, an implementation of CoEvol (Li et al., EMNLP 2024): "
    "for every response two debaters argue about it, an advisor turns the debate into at most three "
    "suggestions, an editor rewrites the response, and a judge compares the old and the new response "
    "in both orders. An edit is kept only when it wins, and the loop repeats up to the configured "
    "number of rounds. A response the judge did not prefer stays as it was."
)


def _share(n: int, total: int) -> str:
    return "-" if total == 0 else f"{n / total:.1%}"


def _num(value: Any, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _front_matter(title: str, data_path: str, split: str) -> str:
    meta = {
        "pretty_name": title,
        "tags": ["coevol", "sft", "synthetic"],
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": data_path}]}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _status(report: Mapping[str, Any]) -> list[str]:
    status, rows = report.get("status", {}), int(report.get("rows", 0))
    labels = [
        ("refined", "refined (at least one accepted edit)"),
        ("kept", "kept as they were"),
        ("failed", "failed (written unchanged)"),
        ("rejected", "rejected (not refined)"),
    ]
    out = ["| rows | count | share |", "| --- | ---: | ---: |"]
    for key, label in labels:
        n = int(status.get(key, 0))
        out.append(f"| {label} | {n:,} | {_share(n, rows)} |")
    out.append(f"| all | {rows:,} | |")
    return out


def _rounds(report: Mapping[str, Any]) -> list[str]:
    rounds = {int(k): int(v) for k, v in report.get("rounds", {}).items()}
    units = sum(rounds.values())
    out = ["| accepted edits | units | share |", "| ---: | ---: | ---: |"]
    out += [f"| {k} | {n:,} | {_share(n, units)} |" for k, n in sorted(rounds.items())]
    return out


def _lengths(report: Mapping[str, Any]) -> list[str]:
    length = report.get("length", {})
    if length.get("original_mean") is None:
        return ["Response lengths were not measured (`pip install 'coevol[report]'` measures them)."]
    return [
        f"Measured in `{length.get('tokenizer')}` tokens.",
        "",
        "| | mean | median |",
        "| --- | ---: | ---: |",
        f"| original | {_num(length.get('original_mean'))} | {_num(length.get('original_median'))} |",
        f"| refined | {_num(length.get('final_mean'))} | {_num(length.get('final_median'))} |",
    ]


def _audit(report: Mapping[str, Any]) -> list[str]:
    j = report.get("judge", {})
    if not j.get("comparisons"):
        return ["No edit reached the judge."]
    rows = [
        ("comparisons (both orders)", _num(j.get("comparisons"), "{:,}")),
        ("position consistency", _num(j.get("position_consistency"), "{:.2f}")),
        ("preference fairness (-1 first position, +1 second)", _num(j.get("preference_fairness"), "{:+.2f}")),
        ("ties", _num(j.get("ties"), "{:,}")),
        ("unparseable verdicts", _num(j.get("unparseable"), "{:,}")),
        ("accepted edits", _num(j.get("accepted"), "{:,}")),
        ("accepted edits longer than what they replaced", _num(j.get("accepted_longer"), "{:.1%}")),
    ]
    out = ["| judge audit | |", "| --- | ---: |", *(f"| {k} | {v} |" for k, v in rows)]
    finding = judge_finding(j)
    return [*out, "", f"**Finding:** {finding}"] if finding else out


_INERT = str.maketrans({"|": "/", "<": "‹", ">": "›", "`": "'"})


def _plain(value: object) -> str:
    """A value from the data or a server for a Markdown table cell: one line, and nothing that
    would end the cell, open HTML or close a code span."""
    return " ".join(str(value).split()).translate(_INERT)


def dataset_card(
    report: Mapping[str, Any],
    *,
    title: str,
    source: str,
    data_path: str,
    split: str,
    settings: Mapping[str, object],
) -> str:
    """The card's Markdown. ``settings`` are the run's algorithm settings (mode, rounds, judge ...),
    shown in the order given; ``report['models']`` names the model(s) of each role."""
    models = report.get("models", {})
    lines = [
        f"# {title}",
        "",
        _METHOD,
        "",
        "## How it was made",
        "",
        f"- Source: `{_plain(source)}`, {int(report.get('rows', 0)):,} rows; the `{split}` split is "
        f"`{data_path}`, in the source's format and with its fields.",
        "",
        "| role | model |",
        "| --- | --- |",
        *(f"| {_plain(role)} | {_plain(', '.join(names))} |" for role, names in sorted(models.items())),
        "",
        "| setting | value |",
        "| --- | --- |",
        *(f"| {_plain(k)} | {_plain(v)} |" for k, v in settings.items()),
        "",
        "## Results",
        "",
        *_status(report),
        "",
        "### Rounds of evolution (the paper's Figure 2a)",
        "",
        *_rounds(report),
        "",
        "### Response length (Figure 2b)",
        "",
        *_lengths(report),
        "",
        "### The judge",
        "",
        *_audit(report),
        "",
    ]
    return _front_matter(title, data_path, split) + "\n" + "\n".join(lines)
