"""``coevol refine ... --push-to-hub OWNER/NAME``: the refined split and its dataset card, one commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coevol.config import Config
from coevol.extras import require
from coevol.io.hub import push_dataset
from coevol.report.card import dataset_card
from coevol.textsafe import inert_line

__all__ = ["check_push", "push_run"]

SPLIT = "train"


def check_push(repo: str) -> None:
    """Refused before the run spends anything: a malformed name, or huggingface_hub missing."""
    from coevol.io.hub import parse_hub

    parse_hub(f"hf://datasets/{repo}")
    require("huggingface_hub", "--push-to-hub", "datasets")


def _settings(config: Config) -> dict[str, object]:
    names = ("strategy", "mode", "max_rounds", "judge", "judge_margin", "temperature", "max_tokens")
    return {name: getattr(config, name) for name in names if getattr(config, name, None) is not None}


def push_run(
    output: Path,
    repo: str,
    config: Config,
    *,
    source: str,
    private: bool,
    err: Any,
    run_dir: Path | None = None,
) -> None:
    """Build the card from the run's files (the report's statistics, without Fig. 3) and push."""
    from coevol.report.build import ReportOptions, build_report
    from coevol.report.reader import RunFiles

    built = build_report(RunFiles.of(output, run_dir), ReportOptions(directions=False, max_samples=0))
    data_path = f"data/{SPLIT}-00000-of-00001{output.suffix.lower()}"
    card = dataset_card(
        built.document,
        title=repo,
        source=source,
        data_path=data_path,
        split=SPLIT,
        settings=_settings(config),
    )
    url = push_dataset(repo, {data_path: output, "README.md": card.encode()}, private=private)
    err.print(f"pushed to hf://datasets/{repo}: {inert_line(url)}", highlight=False, markup=False)
