"""``coevol compare BASELINE CANDIDATE [CANDIDATE ...] -o RESULT``: did refinement help?

Judges every response pair of two versions of a dataset in both orders, with the same connection
and model options as ``refine`` (a ``judge`` role in ``--config`` picks a different, stronger
model), prints a win/tie/loss table per candidate and writes the ``coevol.compare/1`` document.
``coevol report RESULT`` renders it as a page (``report_compare``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from coevol.cli.console import signal_handled, term_cancels
from coevol.cli.exit_codes import (
    EXIT_BUDGET,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    judge_check_exit,
)
from coevol.cli.flags import add_config_flags, overrides
from coevol.config import Config
from coevol.engine.dispatch import RunStats
from coevol.errors import BudgetExceeded, DataError, OutputError
from coevol.io.formats import FORMATS
from coevol.judge_check.run import JudgeCheckFailed
from coevol.textsafe import inert, inert_line

__all__ = ["add_parser", "format_table", "is_compare_result", "report_compare", "run"]

_SCHEMA_HEAD = re.compile(rb'^\s*\{\s*"schema"\s*:\s*"coevol\.compare/1"')


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``compare`` on the CLI's subparsers (``argparse._SubParsersAction``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="judge two versions of a dataset pairwise (did refinement help?)",
        description=(
            "Compare each CANDIDATE with BASELINE, response by response, with a judge that sees each "
            "pair in both orders (the paper's Table 9 prompt, Eq. 4). Rows are matched by id when "
            "every row has one, else by position; conversations per assistant turn. Writes RESULT "
            "(JSON, coevol.compare/1) and prints a win/tie/loss table."
        ),
    )
    p.add_argument("baseline", type=Path, help="the reference version, e.g. the original data")
    p.add_argument(
        "candidates", type=Path, nargs="+", metavar="candidate", help="versions to judge against it"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the result (JSON)")
    p.add_argument(
        "--rule",
        choices=["eq4", "conservative"],
        default="eq4",
        help="eq4: average over both orders, the paper's rule (default); conservative: MT-Bench's, "
        "a win only when both orders agree",
    )
    p.add_argument(
        "--format",
        dest="input_format",
        choices=FORMATS,
        help="force the data format (default: detected)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the judge calls needed; send nothing")
    add_config_flags(p, loop=False)
    return p


def format_table(document: dict[str, Any]) -> Table:
    """The win/tie/loss table; every name from the command line or the file is shown inert."""
    table = Table(title=f"candidate vs baseline (rule {document['rule']})", title_justify="left")
    for name, justify in (
        ("candidate", "left"),
        ("win", "right"),
        ("tie", "right"),
        ("loss", "right"),
        ("total", "right"),
        ("win rate", "right"),
        ("95% CI (Wilson)", "right"),
        ("unparseable", "right"),
        ("failed", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in document["candidates"]:
        iv = c["interval"]
        rate = "-" if c["win_rate"] is None else f"{c['win_rate']:.1%}"
        ci = "-" if iv["low"] is None else f"{iv['low']:.1%}-{iv['high']:.1%}"
        table.add_row(
            Text(inert_line(str(c["candidate"]))),
            *(Text(f"{c[k]:,}") for k in ("win", "tie", "loss", "total")),
            Text(rate),
            Text(ci),
            Text(f"{c['unparseable']:,}"),
            Text(f"{c['failed']:,}"),
        )
    return table


def _config(ns: argparse.Namespace) -> Config:
    from coevol.config import load_config

    return load_config(ns.config, overrides(ns))


def _dry_run(ns: argparse.Namespace, config: Config) -> int:
    from coevol.cli.dryrun import judge_check_cost
    from coevol.compare.dryrun import estimate_units, format_estimates
    from coevol.compare.run import judge_config, plan_comparison
    from coevol.compare.units import Misaligned
    from coevol.prompts.templates import load_prompts

    cfg = judge_config(config)
    prompts = load_prompts(cfg.prompts_dir)
    window = cfg.conversation.window_rounds
    estimates = []
    for cand in ns.candidates:
        try:  # in step with the baseline, holding no row (like refine's dry run)
            estimate = estimate_units(str(cand), _streamed_units(ns, cand, prompts, window), prompts, cfg)
        except Misaligned:  # ids listed in another order: matched through an index, as a run does
            plan = plan_comparison(
                ns.baseline, [cand], prompts, input_format=ns.input_format, window_rounds=window
            )
            estimate = estimate_units(str(cand), plan.candidates[0].units, prompts, cfg)
        estimates.append(estimate)
    sys.stdout.write(inert(format_estimates(estimates)))
    judge_check_cost(cfg)
    return EXIT_OK


def _streamed_units(ns: argparse.Namespace, candidate: Path, prompts: Any, window: int) -> Iterator[Any]:
    from coevol.compare.units import row_units, stream_pairs
    from coevol.domain import Example
    from coevol.io.readers import read_examples

    def rows(path: Path) -> Iterator[Example]:
        return (r for r in read_examples(path, fmt=ns.input_format) if isinstance(r, Example))

    pairs = stream_pairs(rows(ns.baseline), rows(candidate), str(ns.baseline), str(candidate))
    for position, b, c in pairs:
        yield from row_units(prompts, position, b, c, window)


class _Display:
    """A plain progress bar on stderr: pairs done, calls sent and answered from the cache."""

    def __init__(self, err: Console, quiet: bool) -> None:
        self.progress = None
        if not quiet:
            self.progress = Progress(
                TextColumn("judging"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[calls]}"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            )
            self.task = self.progress.add_task("compare", total=None, calls="")

    def __enter__(self) -> _Display:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, done: int, total: int, stats: RunStats) -> None:
        if self.progress is not None:
            calls = f"calls sent {stats.sent:,}, cached {stats.cached:,}, retries {stats.retries:,}"
            self.progress.update(self.task, completed=done, total=total, calls=calls)


def run(ns: argparse.Namespace) -> int:
    """Run the comparison; print the table (stdout) and any finding (stderr)."""
    config = _config(ns)
    if ns.dry_run:
        return _dry_run(ns, config)
    err = Console(stderr=True, highlight=False)
    terminated: list[int] = []

    async def go() -> Any:
        from coevol.compare.run import acompare_files

        with signal_handled(signal.SIGTERM, term_cancels(terminated)), _Display(err, ns.quiet) as display:
            return await acompare_files(
                ns.baseline,
                ns.candidates,
                ns.output,
                config,
                rule=ns.rule,
                input_format=ns.input_format,
                progress=display,
            )

    try:
        result = asyncio.run(go())
    except BudgetExceeded as exc:
        err.print(f"stopped: {inert_line(str(exc))}; rerun the same command to resume", markup=False)
        return EXIT_BUDGET
    except JudgeCheckFailed as exc:
        from coevol.cli.judge_check import print_result

        print_result(exc.result)
        err.print(f"error: {inert_line(str(exc))}", markup=False)
        return judge_check_exit(exc.result.verdict.value)
    except asyncio.CancelledError:
        err.print("stopped; rerun the same command to resume", markup=False)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume", markup=False)
        return EXIT_INTERRUPTED
    return _finished(err, result.document, result.paths.result)


def _finished(err: Console, document: dict[str, Any], path: Path) -> int:
    Console(highlight=False).print(format_table(document))
    for c in document["candidates"]:
        if c["finding"]:
            err.print(
                f"warning ({inert_line(str(c['candidate']))}): {inert_line(c['finding'])}", markup=False
            )
    err.print(
        f"result: {inert_line(str(path))} (coevol report {inert_line(str(path))} renders it)", markup=False
    )
    failed = sum(c["failed"] for c in document["candidates"])
    if failed:
        err.print(
            f"{failed} pairs failed (left out of the totals); rerun the same command to judge them again",
            markup=False,
        )
        return EXIT_PARTIAL
    return EXIT_OK


def is_compare_result(path: Path) -> bool:
    """Whether ``path`` is a ``coevol.compare/1`` document (read from its first bytes only)."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            return _SCHEMA_HEAD.match(f.read(256)) is not None
    except OSError:
        return False


def load_result(path: Path) -> dict[str, Any]:
    """The document, checked enough that rendering cannot fail on a hand-edited or hostile file."""
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != "coevol.compare/1":
        raise DataError(f"{path}: not a coevol.compare/1 document")
    return doc


def report_compare(ns: argparse.Namespace) -> int:
    """``coevol report RESULT`` for a compare result: the page beside it (or at ``-o``)."""
    from coevol.cli.report_targets import check_report_targets, open_hint, report_paths
    from coevol.io.writers import write_whole
    from coevol.report.compare_page import render_compare_page

    doc = load_result(ns.output)
    try:
        page = render_compare_page(doc, title=str(ns.output), max_units=ns.max_samples)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise DataError(
            f"{ns.output}: not a valid coevol.compare/1 document ({type(exc).__name__}: {exc})"
        ) from None
    out, _ = report_paths(ns.output, ns.out)
    if out.resolve() == ns.output.resolve():
        raise OutputError(f"refusing to write the page over the result {ns.output}; give -o PAGE.html")
    check_report_targets(out, None, _compare_reads(ns.output, doc))
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"report: {inert_line(str(out))}", markup=False)
    write_whole(out, page.encode())
    err.print(open_hint(out), markup=False)
    return EXIT_OK


def _compare_reads(result: Path, doc: dict[str, Any]) -> dict[str, Path]:
    """The result and the files the comparison read (as named in it, from here or beside it)."""
    reads = {"the result being read": result}
    base, cands = doc.get("baseline"), doc.get("candidates")
    named = [base.get("path") if isinstance(base, dict) else None]
    named += [c.get("candidate") for c in cands if isinstance(c, dict)] if isinstance(cands, list) else []
    for name in named:
        if isinstance(name, str) and name and "\0" not in name:
            reads[f"the compared file {name}"] = Path(name)
            reads[f"the compared file {name} (beside the result)"] = result.parent / name
    return reads
