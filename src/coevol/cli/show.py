"""``coevol show``: the trace of a sample as a person reads it -- debate, suggestions, edit, verdicts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

__all__ = ["render_record", "show_trace"]


def _panel(title: str, body: str | None, style: str = "") -> Panel:
    return Panel(Text(body or "(none)"), title=title, title_align="left", border_style=style)


def render_record(record: dict[str, Any]) -> Iterable[Any]:
    """Renderables for one trace line."""
    head = f"sample {record['index']} (line {record['line']})"
    if "id" in record:
        head += f" id={record['id']}"
    yield Text(f"{head}: {record['status']}, {record['accepted_rounds']} accepted edit(s)", style="bold")
    if record.get("error"):
        yield Text(f"error: {record.get('error_type')}: {record['error']}", style="red")
    for turn in record.get("turns", []):
        yield Text(f"assistant turn {turn['turn']}: stopped by {turn['stop_reason']}", style="bold cyan")
        for it in turn["iterations"]:
            yield Text(f"round {it['round']}", style="bold")
            debate = it.get("debate")
            if debate:
                yield _panel("positive debater, round 1", debate["positive_round1"], "green")
                yield _panel("critical debater, round 1", debate["critical_round1"], "red")
                yield _panel("positive debater, round 2", debate["positive_round2"], "green")
                yield _panel("critical debater, round 2", debate["critical_round2"], "red")
            if it.get("suggestions") is not None:
                yield _panel("advisor: suggestions", it["suggestions"], "yellow")
            yield _panel("editor: edited response", it.get("edited"), "blue")
            judge = it.get("judge")
            if judge:
                for order in judge["orders"]:
                    which = "previous first" if order["order"] == "forward" else "edited first"
                    scores = order["scores"]
                    score_text = (
                        f"s(previous)={scores['previous']:g} s(edited)={scores['edited']:g}"
                        if scores
                        else f"unparseable after {order['attempts']} tries"
                    )
                    yield _panel(
                        f"judge ({which}): {order['verdict']} -> {score_text}", order["raw"][-1], "magenta"
                    )
                yield Text(
                    f"average: previous {judge['score_previous']} vs edited {judge['score_edited']}"
                    f" -> {'ACCEPTED' if it['accepted'] else 'kept the previous response'}",
                    style="bold green" if it["accepted"] else "bold yellow",
                )


def show_trace(path: Path, *, indices: list[int] | None = None, limit: int = 5) -> None:
    console = Console()
    shown = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = orjson.loads(line)
            if indices is not None and record["index"] not in indices:
                continue
            for renderable in render_record(record):
                console.print(renderable)
            shown += 1
            if shown >= limit:
                break
