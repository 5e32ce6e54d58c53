"""``coevol report OUTPUT``: the paper's analyses and a per-sample viewer for one run.

Reads the run's files beside OUTPUT (trace, rejects, store) and writes ``OUTPUT.report.html`` and
``OUTPUT.report.json``; ``-o PATH`` writes ``PATH`` (the page) and the JSON beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from coevol.cli.exit_codes import EXIT_OK
from coevol.cli.report_targets import check_report_targets, open_hint, report_paths
from coevol.errors import ConfigError, DataError
from coevol.io.guard import regular_file
from coevol.io.writers import write_whole
from coevol.report.stats import DEFAULT_DIRECTION_LINES
from coevol.textsafe import inert_line

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report`` on the CLI's subparsers (``argparse._SubParsersAction``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="write an HTML report and a JSON summary of a run",
        description=(
            "Analyse a run (Fig. 2 and 3 of the CoEvol paper, a judge audit, usage) and write a "
            "self-contained HTML page with a per-sample viewer, plus a JSON document (coevol.report/1)."
        ),
    )
    p.add_argument("output", type=Path, help="the refined output file of a run (its trace lies beside it)")
    p.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="the run folder the run was given (--run-dir); `coevol report DIR` alone also finds its output",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        help="where to write the page (default OUTPUT.report.html, or DIR/report.html for a run folder)",
    )
    p.add_argument(
        "--tokenizer",
        default="cl100k_base",
        help="response length tokenizer: cl100k_base (default), words, or tiktoken-file:PATH",
    )
    p.add_argument(
        "--no-directions", action="store_true", help="skip the spaCy verb-object analysis (Fig. 3)"
    )
    p.add_argument(
        "--max-samples",
        type=int,
        default=1000,
        help="samples embedded in the page (default 1000; JSON counts all)",
    )
    p.add_argument(
        "--directions-lines",
        type=int,
        default=DEFAULT_DIRECTION_LINES,
        metavar="N",
        help="parse at most N suggestion lines for Fig. 3, a uniform sample of a larger run (0: all)",
    )
    p.add_argument("--config", type=Path, help="the run's YAML config, for prices (cost per role)")
    return p


def _prices(path: Path | None) -> dict[str, tuple[float, float]] | None:
    if path is None:
        return None
    from coevol.config import load_config

    return load_config(path, {}).prices()


def _run_of(output: Path, run_dir: Path | None) -> tuple[Path, Path | None]:
    """(output, run folder): ``coevol report DIR`` reads the output's name from the folder's record."""
    from coevol.io.rundir import read_marker
    from coevol.report.reader import RunFiles

    if run_dir is None and output.is_dir():
        named = read_marker(output / "run.json")
        if named is None:
            raise DataError(f"{output} is a folder without a coevol run (no run.json); give the run's output")
        return named, output
    if run_dir is not None and not run_dir.is_dir():
        raise DataError(f"the run folder {run_dir} is not a folder")
    default = output.with_name(output.name + ".coevol")
    beside = RunFiles.beside(output).trace
    if run_dir is None and not beside.exists() and (default / "run.json").is_file():
        return output, default  # run with a bare --run-dir: its folder is found without naming it
    return output, run_dir


def run(ns: argparse.Namespace) -> int:
    """Build and write the report; print where it is and the judge finding, if any."""
    from rich.console import Console

    from coevol.audit import judge_finding
    from coevol.report.build import ReportOptions, build_report
    from coevol.report.reader import RunFiles

    if ns.max_samples < 0 or ns.directions_lines < 0:
        raise ConfigError("--max-samples and --directions-lines must be 0 or more")
    from coevol.cli.compare import is_compare_result, report_compare

    if is_compare_result(ns.output):  # a ``coevol compare`` result (schema coevol.compare/1)
        return report_compare(ns)
    output, run_dir = _run_of(ns.output, ns.run_dir)
    files = RunFiles.of(output, run_dir)
    if not files.trace.exists():
        where = f"in the run folder {run_dir}" if run_dir is not None else f"beside {output}"
        raise DataError(f"no trace {where}: expected {files.trace} (run coevol refine first)")
    regular_file(files.trace, "trace")  # a FIFO would hang the read, a link to /dev/zero never end
    options = ReportOptions(
        tokenizer=ns.tokenizer,
        directions=not ns.no_directions,
        max_samples=ns.max_samples,
        direction_lines=ns.directions_lines,
        prices=_prices(ns.config),
    )
    page, doc = report_paths(files.output, ns.out, run_dir)
    from coevol.engine.runner import RunPaths

    run_files = RunPaths.of(Path(), files.output, None, run_dir)
    reads = {"the run's output": files.output, "the trace being read": files.trace}
    reads.update({f"the run's {k.removeprefix('the ')}": v for k, v in run_files.working().items()})
    reads["the run's partial trace"] = files.trace.with_name(run_files.trace.name + ".partial")
    reads["the run's partial output"] = files.output.with_name(files.output.name + ".partial")
    check_report_targets(page, doc, reads)
    built = build_report(files, options)
    out = Console(stderr=True, highlight=False, soft_wrap=True)  # a path is never broken across lines
    out.print(f"report: {inert_line(str(page))}\njson:   {inert_line(str(doc))}", markup=False)
    write_whole(doc, orjson.dumps(built.document, option=orjson.OPT_INDENT_2) + b"\n")
    write_whole(page, built.page.encode())
    for note in built.notes:
        out.print(f"note: {inert_line(note)}", markup=False)
    for missing in built.document["missing"]:
        out.print(f"note: {inert_line(missing['message'])}", markup=False)
    finding = judge_finding(built.document["judge"])
    if finding is not None:
        out.print(f"warning: {finding}", markup=False)
    out.print(open_hint(page), markup=False)
    return EXIT_OK
