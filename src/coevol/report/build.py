"""One pass over a run's files to the report document and page (no writing here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coevol.domain import Status
from coevol.errors import MissingExtra
from coevol.report.directions import Extract, load_extractor
from coevol.report.page import INSTALL_LINE, render_page, sample_view
from coevol.report.reader import (
    RunFiles,
    SampleSelection,
    TraceReadStats,
    count_lines,
    read_store,
    read_trace,
)
from coevol.report.stats import DEFAULT_DIRECTION_LINES, ReportBuilder, is_unusual
from coevol.report.tokenize import DEFAULT_TOKENIZER, load_tokenizer

__all__ = ["BuiltReport", "ReportOptions", "build_report"]


@dataclass(frozen=True, slots=True)
class ReportOptions:
    tokenizer: str = DEFAULT_TOKENIZER
    directions: bool = True
    max_samples: int = 1000
    direction_lines: int = DEFAULT_DIRECTION_LINES
    prices: dict[str, tuple[float, float]] | None = None


@dataclass(slots=True)
class BuiltReport:
    document: dict[str, Any]
    page: str
    notes: list[str] = field(default_factory=list)


def _missing(part: str, exc: MissingExtra) -> dict[str, str]:
    return {"part": part, "message": str(exc), "install": INSTALL_LINE}


def _builder(options: ReportOptions) -> ReportBuilder:
    missing: list[dict[str, str]] = []
    count = None
    try:
        tokenizer = load_tokenizer(options.tokenizer)
        count, name = tokenizer.count, tokenizer.name
    except MissingExtra as exc:
        name = options.tokenizer
        missing.append(_missing("length", exc))
    extract: Extract | None = None
    if options.directions:
        try:
            extract = load_extractor()
        except MissingExtra as exc:
            missing.append(_missing("directions", exc))
    return ReportBuilder(
        count_tokens=count,
        tokenizer=name,
        extract=extract,
        missing=missing,
        direction_lines=options.direction_lines,
    )


def build_report(files: RunFiles, options: ReportOptions) -> BuiltReport:
    """Stream the trace once; the page embeds a bounded selection, the document counts every row."""
    builder = _builder(options)
    selection = SampleSelection(options.max_samples)
    stats = TraceReadStats()
    for record in read_trace(files.trace, stats):
        builder.add(record)
        selection.offer(record, is_unusual(record))
    rejects = count_lines(files.rejects)
    extra_rejected = max(0, rejects - builder.status[Status.REJECTED.value])
    builder.status[Status.REJECTED.value] += extra_rejected
    builder.rows += extra_rejected
    store, store_note = read_store(files.store)
    document = builder.result(
        sent=None if store is None else store.calls,
        prices=options.prices,
        wall_time_s=None if store is None else store.wall_time_s,
    )
    notes = []
    if files.interrupted:
        notes.append(f"This run did not finish: the report reads its partial trace {files.trace.name}.")
    if stats.unreadable:
        notes.append(
            f"{stats.unreadable} trace lines could not be read and are not counted "
            f"(first: {stats.first_error})."
        )
    if store_note:
        notes.append(store_note)
    if extra_rejected:
        notes.append(
            f"{extra_rejected} rejected rows are counted from {files.rejects.name} (they have no trace)."
        )
    document["source"] = {
        "output": files.output.name,
        "trace": files.trace.name,
        "interrupted": files.interrupted,
        "unreadable_lines": stats.unreadable,
        "embedded_samples": len(selection.chosen()),
    }
    samples = [sample_view(r) for r in selection.chosen()]
    page = render_page(
        document,
        samples,
        title=files.output.name,
        selection=selection.describe(builder.rows - extra_rejected),
        original=builder.original_len,
        final=builder.final_len,
        verbs=builder.directions.verb_totals(),
        notes=tuple(notes),
    )
    return BuiltReport(document, page, notes)
