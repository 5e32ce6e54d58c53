"""``--dry-run`` for the tree strategy: the best and the worst case per sample, per role."""

from __future__ import annotations

from typing import Any

import pytest

from coevol.cli.dryrun import format_estimate
from coevol.config import Config, TreeConfig
from coevol.domain import Example, Turn
from coevol.plan import estimate_examples
from coevol.prompts.templates import load_prompts
from coevol.tree.settings import TreeSettings

P = load_prompts()
ROW = Example(0, 1, "alpaca", [Turn("user", "Say hi."), Turn("assistant", "hello")], {})


def calls(**tree: Any) -> dict[str, tuple[int, int]]:
    config = Config(strategy="tree", tree=TreeConfig(**tree))
    est = estimate_examples(config, [ROW, ROW], P)
    return {role: (r.calls_min // 2, r.calls_max // 2) for role, r in est.roles.items() if r.calls_max}


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({}, {"critic": (1, 16), "refiner": (0, 15)}),
        ({"n": False}, {"critic": (5, 80), "refiner": (0, 15)}),
        ({"algorithm": "dfs"}, {"critic": (1, 22), "refiner": (0, 21)}),
        ({"branch": 2, "keep": 1, "depth": 2}, {"critic": (1, 5), "refiner": (0, 4)}),
        (
            {"expand": "coevol"},
            {
                "positive": (0, 30),
                "critical": (0, 30),
                "advisor": (0, 15),
                "editor": (0, 15),
                "critic": (1, 16),
            },
        ),
        ({"value": "pairwise"}, {"judge": (6, 30), "refiner": (3, 15), "critic": (1, 5)}),
    ],
)
def test_calls_per_sample(tree: dict[str, Any], expected: dict[str, tuple[int, int]]) -> None:
    assert calls(**tree) == expected


def test_the_worst_case_counts_of_the_issue() -> None:
    assert TreeSettings().worst().refines == 15 and TreeSettings().worst().evaluations == 16
    assert TreeSettings(algorithm="dfs").worst().refines == 21
    text = format_estimate(estimate_examples(Config(strategy="tree"), [ROW], P))
    assert text.splitlines()[0] == (
        "dry run (tree: bfs, branch 3, keep 2, depth 3, gate 0.5, spar children, critic value): nothing was sent"
    )
    assert "per sample: best 0 refine requests and 1 critic evaluations of 5 votes; worst 15 and 16" in text
    assert "CoEvol's loop: 8 to 24 calls" in text
