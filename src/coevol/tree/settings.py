"""The tree search's knobs, SPaR's defaults, and its cost bounds. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from coevol.domain import TREE_ROLES
from coevol.roles.spar import LabelRule

__all__ = [
    "ALGORITHMS",
    "EXPANSIONS",
    "TREE_ROLES",
    "VALUES",
    "Algorithm",
    "Expansion",
    "TreeCost",
    "TreeSettings",
    "Valuation",
]

Algorithm = Literal["bfs", "dfs"]
Expansion = Literal["spar", "coevol"]
Valuation = Literal["critic", "pairwise"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
EXPANSIONS: tuple[Expansion, ...] = get_args(Expansion)
VALUES: tuple[Valuation, ...] = get_args(Valuation)


@dataclass(frozen=True, slots=True)
class TreeCost:
    """Calls for one turn. An evaluation is one critic request of ``votes`` choices (``votes``
    requests where the server gives one choice) or one both-orders judge comparison (2 calls)."""

    refines: int  # children produced: a refine request each, or a CoEvol debate+advise+edit
    evaluations: int


@dataclass(frozen=True, slots=True)
class TreeSettings:
    """SPaR's search (thu-coai/SPaR ``src/ToT``) with its defaults.

    ``draws``: a tied pass rate draws all the votes again, up to this many draws in all (SPaR's
    ``get_value`` tries 3 times). ``tries``: refine requests per child before it is skipped.
    ``use_n``: ask for the votes in one request with ``n`` (a server that answers fewer choices is
    asked for the rest one request at a time); off, every vote is its own request. ``seed``: the
    run's seed, mixed into every request seed the search derives.
    """

    algorithm: Algorithm = "bfs"
    branch: int = 3
    keep: int = 2
    depth: int = 3
    end_gate: float = 0.5
    votes: int = 5
    draws: int = 3
    tries: int = 3
    label: LabelRule = "strict"
    expand: Expansion = "spar"
    value: Valuation = "critic"
    use_n: bool = True
    seed: int | None = None  # the run's seed: it enters every derived seed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def worst(self) -> TreeCost:
        """The most children and evaluations one turn can cost (no pass until the last level;
        failed refine tries and tied re-draws not counted)."""
        kept = min(self.keep, self.branch)
        if self.algorithm == "bfs":
            refines, level = 0, self.branch
            for _ in range(self.depth):
                refines += level
                level = kept * self.branch
        else:
            refines = 0
            for _ in range(self.depth):  # from the deepest level up: branch + kept x (below)
                refines = self.branch + kept * refines
        return TreeCost(refines, refines + (1 if self.value == "critic" else 0))

    def best(self) -> TreeCost:
        """The fewest: the critic passes the root (one evaluation); with the pairwise value the
        root is never judged, so a first level that passes."""
        if self.value == "critic":
            return TreeCost(0, 1)
        return TreeCost(self.branch, self.branch)
