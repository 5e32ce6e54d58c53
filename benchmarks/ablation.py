"""The strategy ablation: CoEvol's loop, SPaR's tree and the CoEvol tree, each judged against the original.

    PYTHONPATH=src python benchmarks/ablation.py DATA --out DIR [--limit N] [-- FLAGS...]

FLAGS go to every ``coevol refine`` and to ``coevol compare`` (the server, the model, the judge:
``--base-url http://localhost:8000/v1``, or nothing for the embedded model). The three runs are

    full    coevol refine DATA                  (the paper's loop)
    tree    coevol refine DATA --strategy tree  (SPaR: critic and refiner)
    ctree   coevol refine DATA --strategy tree --tree-expand coevol --tree-value pairwise

each in its own process with its own store, so a rerun replays and no run borrows another's calls
(for ``ctree`` the CoEvol roles sample at ``--ctree-temperature``, 0.7 by default, through a config
written beside the outputs: at 0 a node's three children would be the same edit), then one
``coevol compare DATA full tree ctree``. The script prints, and writes to ``DIR/ablation.md`` (the
figures also to ``DIR/ablation.json``), one Markdown row per run: what the run did (rows changed,
stop reasons, rows where it proposed anything new at all), what it spent (requests and tokens
per row, the wall time of the run that produced the output: a rerun keeps it) and the compare judge's
win/tie/loss against the original, with the judge's own finding when it looks position-driven. A
rerun with the same DIR pays nothing: every call comes back from the stores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coevol.domain import COEVOL_ROLES, Role, TurnTrace
from coevol.io.tracefile import Unreadable, read_trace

MODES: dict[str, list[str]] = {
    "full": [],
    "tree": ["--strategy", "tree"],
    "ctree": ["--strategy", "tree", "--tree-expand", "coevol", "--tree-value", "pairwise"],
}
LABELS = {
    "full": "CoEvol loop (`full`)",
    "tree": "SPaR tree (`--strategy tree`)",
    "ctree": "CoEvol tree (`--tree-expand coevol --tree-value pairwise`)",
}


@dataclass
class Run:
    """What one refine run did and spent, read back from its trace."""

    mode: str
    seconds: float
    rows: int = 0
    changed: int = 0
    failed: int = 0
    found: int = 0  # rows where the run proposed a response other than the original, kept or not
    requests: int = 0
    tokens: int = 0
    stops: Counter[str] = field(default_factory=Counter)


def subset(data: Path, limit: int | None, out: Path) -> Path:
    """The first ``limit`` rows of a JSON array or JSON Lines file, as a file of the same kind."""
    if limit is None:
        return data
    target = out / f"data{data.suffix}"
    if data.suffix == ".jsonl":
        lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
        target.write_text("".join(lines[:limit]), encoding="utf-8")
    else:
        rows = json.loads(data.read_text(encoding="utf-8"))
        target.write_text(json.dumps(rows[:limit], ensure_ascii=False, indent=1), encoding="utf-8")
    return target


def refine(output: Path, args: list[str]) -> float:
    """``coevol refine ... -o OUTPUT``; the seconds of the run that produced OUTPUT. A rerun that
    finds OUTPUT done replays it from the store in seconds, so the first run's time (kept beside
    it) stands."""
    kept = output.with_name(output.name + ".seconds")
    done = output.exists() and kept.exists()
    seconds = coevol(["refine", *args, "-o", str(output)])
    if done:
        return float(kept.read_text(encoding="utf-8"))
    kept.write_text(f"{seconds!r}\n", encoding="utf-8")
    return seconds


def coevol(args: list[str]) -> float:
    """Run ``python -m coevol ARGS`` in its own process; the wall time, model load included."""
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "coevol", *args], check=False).returncode
    if code != 0:
        raise SystemExit(f"coevol {' '.join(args)} exited {code}")
    return time.perf_counter() - started


def ctree_config(out: Path, base: Path | None, temperature: float) -> list[str]:
    """``--config`` for the CoEvol tree: the user's config (if any) with the CoEvol roles but the
    judge sampling at ``temperature``."""
    config: dict[str, Any] = yaml.safe_load(base.read_text(encoding="utf-8")) if base else {}
    roles = config.setdefault("roles", {})
    for role in COEVOL_ROLES:
        if role is not Role.JUDGE:
            roles.setdefault(role.value, {}).setdefault("temperature", temperature)
    path = out / "ctree.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return ["--config", str(path)]


def read_run(mode: str, seconds: float, trace: Path) -> Run:
    run = Run(mode, seconds)
    for record in read_trace(trace):
        if isinstance(record, Unreadable):
            raise SystemExit(f"{trace}: {record.message}")
        run.rows += 1
        run.changed += record.status == "refined"
        run.failed += record.status == "failed"
        for usage in record.usage.values():
            run.requests += usage.calls
            run.tokens += usage.prompt_tokens + usage.completion_tokens
        run.stops.update(str(t.stop_reason) for t in record.turns)
        run.found += any(_proposed(t) for t in record.turns)
    return run


def _proposed(turn: TurnTrace) -> bool:
    """Did the run propose a response other than the original for this turn (an edit, a node)?"""
    if turn.tree is not None:
        return any(n.response not in (None, turn.original) for n in turn.tree.nodes)
    return any(i.edited not in (None, turn.original) for i in turn.iterations)


def table(runs: list[Run], compared: dict[str, Any]) -> str:
    rows = {r["candidate"]: r for r in compared["table"]}
    findings = {c["candidate"]: c.get("finding") for c in compared["candidates"]}
    undecided = {c["candidate"]: c["unparseable"] + c["failed"] for c in compared["candidates"]}
    head = (
        "| strategy | rows changed | rows with a new candidate | stop reasons (per turn) | requests / row "
        "| tokens / row | s / row | vs original: win / tie / loss | win rate (95% CI) |\n"
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |\n"
    )
    lines = []
    for run in runs:
        n = max(run.rows, 1)
        name, c = next((k, v) for k, v in rows.items() if Path(k).stem == run.mode)
        left = f" ({undecided[name]} undecided)" if undecided[name] else ""
        stops = ", ".join(f"{k} {v}" for k, v in run.stops.most_common())
        failed = f" ({run.failed} failed)" if run.failed else ""
        lines.append(
            f"| {LABELS[run.mode]} | {run.changed} of {run.rows}{failed} | {run.found} | {stops} "
            f"| {run.requests / n:.1f} "
            f"| {run.tokens / n:,.0f} | {run.seconds / n:.1f} | {c['win']} / {c['tie']} / {c['loss']}{left} "
            f"| {c['win_rate']:.2f} ({c['low']:.2f}-{c['high']:.2f}) |"
        )
    notes = sorted({f for f in findings.values() if f})
    judge = compared["judge"]
    tail = f"\nCompare judge: {judge.get('model')} ({judge.get('kind')}), rule {compared['rule']}.\n"
    return head + "\n".join(lines) + "\n" + tail + "".join(f"\n{n}\n" for n in notes)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the outputs, stores and table")
    parser.add_argument("--limit", type=int, help="only the first N rows")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--config", type=Path, help="a coevol config for every run and the compare")
    parser.add_argument(
        "--ctree-temperature", type=float, default=0.7, help="the CoEvol tree's debaters, advisor, editor"
    )
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    ns, flags = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    ns.out.mkdir(parents=True, exist_ok=True)
    data = subset(ns.data, ns.limit, ns.out)
    config = ["--config", str(ns.config)] if ns.config else []
    runs, outputs = [], []
    for mode in ns.modes:
        output = ns.out / f"{mode}{data.suffix}"
        own = ctree_config(ns.out, ns.config, ns.ctree_temperature) if mode == "ctree" else config
        seconds = refine(output, [str(data), "-q", *MODES[mode], *own, *flags])
        runs.append(read_run(mode, seconds, Path(f"{output}.trace.jsonl")))
        outputs.append(str(output))
        print(f"{mode}: {seconds:.0f} s", file=sys.stderr, flush=True)
    result = ns.out / "compare.json"
    started = time.perf_counter()
    coevol(["compare", str(data), *outputs, "-o", str(result), "-q", *config, *flags])
    print(f"compare: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    text = table(runs, json.loads(result.read_text(encoding="utf-8")))
    (ns.out / "ablation.md").write_text(text, encoding="utf-8")
    figures = [{**asdict(r), "stops": dict(r.stops)} for r in runs]
    (ns.out / "ablation.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
