"""``coevol judge-check``: run the configured judge on the built-in pairs and say whether it is usable.

The same connection options as ``refine`` (``--base-url``, ``--model``, ``--config`` with a judge
role, ``--judge verdict|score|prob``). Prints the figures and one verdict with advice, writes them
as JSON with ``--json``, and exits 0 for ``usable``, 5 for ``position-driven`` and 6 for
``unusable`` (``coevol.cli.exit_codes``). Its calls are kept in a store (``--store``, default
beside the cache folder's models) so a rerun pays nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from coevol.cli.exit_codes import judge_check_exit
from coevol.io.writers import write_whole
from coevol.judge_check.metrics import CheckResult
from coevol.textsafe import inert_line

__all__ = ["add_parser", "format_result", "print_result", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``judge-check`` on the CLI's subparsers."""
    from coevol.cli.flags import add_config_flags

    p: argparse.ArgumentParser = subparsers.add_parser(
        "judge-check",
        help="check the judge on built-in pairs whose better answer is known",
        description=(
            "Run the configured judge, in both orders, on 44 built-in pairs whose better answer is "
            "known (wrong vs corrected, truncated vs complete, off-topic vs on-topic, and pairs whose "
            "better answer is the shorter one). Prints accuracy, position consistency, primacy/recency, "
            "length bias and a verdict: usable (exit 0), position-driven (5) or unusable (6)."
        ),
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here as JSON")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="check only N pairs, taken in turn from each category (a quick look at a slow model)",
    )
    p.add_argument(
        "--store",
        type=Path,
        help="the call store (default: judge-check.db in the cache folder); a rerun pays nothing",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    add_config_flags(p, loop=False, check=False)
    return p


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _signed(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, "+" + fmt)


def format_result(d: dict[str, Any]) -> Table:
    """The figures of ``CheckResult.to_dict()`` as a table."""
    table = Table(title=f"judge check ({d['kind']}, {d['pairs']} pairs, both orders)", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("accuracy, both orders", _pct(d["accuracy"])),
        ("accuracy, better answer shown second", _pct(d["accuracy_forward"])),
        ("accuracy, better answer shown first", _pct(d["accuracy_reverse"])),
        ("position consistency", _pct(d["position_consistency"])),
        ("primacy (position 1 whatever the content)", f"{d['primacy']} of {d['compared']}"),
        ("recency (position 2 whatever the content)", f"{d['recency']} of {d['compared']}"),
        ("accuracy when the better answer is longer", _pct(d["accuracy_better_longer"])),
        ("accuracy when the better answer is shorter", _pct(d["accuracy_better_shorter"])),
        (
            "length bias (longer - shorter; 0 is fair)",
            "-" if d["length_bias"] is None else f"{d['length_bias']:+.0%}",
        ),
        ("orders without a usable verdict", str(d["unparseable"])),
        ("pairs whose call failed", str(d["failed"])),
    ]
    if d["kind"] == "prob":
        rows += [
            ("prob: pairs decided right by the mean of both orders", _pct(d["prob_accuracy"])),
            (
                "prob: mean P(better preferred) - 0.5",
                "-" if d["prob_margin"] is None else f"{d['prob_margin']:+.3f}",
            ),
            ("prob: orders with no position digit", str(d["no_digit"])),
        ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_result(result: CheckResult, console: Console | None = None) -> None:
    """The table, then the verdict and its advice."""
    out = console or Console(highlight=False)
    d = result.to_dict()
    out.print(format_result(d))
    style = "bold green" if d["verdict"] == "usable" else "bold red"
    out.print(Text.assemble(("verdict: ", style), (d["verdict"], style), " - ", inert_line(d["advice"])))


def _default_store() -> Path:
    from coevol.llm.model_asset import default_cache_dir

    return default_cache_dir() / "judge-check.db"


def _progress(err: Console, quiet: bool) -> Callable[[int, int], None] | None:
    """One line per judged pair on stderr (a slow embedded judge takes minutes per pair)."""
    if quiet:
        return None

    def show(done: int, total: int) -> None:
        err.print(f"judged {done} of {total} pairs", highlight=False, markup=False)

    return show


def run(ns: argparse.Namespace, err: Console) -> int:
    """Check the judge; print (and write) the figures; the exit code says the verdict."""
    from coevol.cli.flags import overrides
    from coevol.config import load_config
    from coevol.errors import ConfigError
    from coevol.judge_check.run import acheck_judge

    config = load_config(ns.config, overrides(ns))
    store = ns.store if ns.store is not None else _default_store()
    if ns.limit is not None and ns.limit < 1:
        raise ConfigError("--limit must be at least 1")
    result = asyncio.run(acheck_judge(config, store, limit=ns.limit, progress=_progress(err, ns.quiet)))
    print_result(result)
    if ns.json is not None:
        write_whole(ns.json, orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return judge_check_exit(result.verdict.value)
