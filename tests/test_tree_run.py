"""``--strategy tree`` through the whole run (runner, store, trace, pairs) on the fake HTTP server."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.domain import TraceRecord
from coevol.store.sqlite import Store
from coevol.testing.responders import CoEvolResponder, accept_up_to, identify_role
from coevol.testing.tree import CRITIC_HEAD, Label, TreeResponder

from .engine_support import (
    ThreadedServer,
    alpaca_rows,
    kill_when,
    refine_file,
    run_cli,
    start_cli,
    write_jsonl,
)


def role_of(body: dict[str, Any]) -> str:
    messages = body["messages"]
    if messages and messages[0]["content"].startswith(CRITIC_HEAD):
        return "refiner" if len(messages) == 3 else "critic"
    return identify_role(messages)


def roles(server: ThreadedServer, start: int = 0) -> Counter[str]:
    return Counter(role_of(r.body) for r in server.requests[start:])


def traces(out: Path) -> list[TraceRecord]:
    lines = out.with_name(out.name + ".trace.jsonl").read_bytes().splitlines()
    return [TraceRecord.from_dict(orjson.loads(line)) for line in lines]


def second_level(response: str) -> Sequence[Sequence[Label]]:
    """Originals and first-level children fail, second-level ones pass (3 of 5)."""
    return [["Yes", "Yes", "Yes", "No", "No"]] if response.count("|") == 2 else [["No"] * 5]


def test_tree_run_writes_the_found_responses_pairs_and_the_tree(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(3))
    out = tmp_path / "out.jsonl"
    with ThreadedServer(responder=TreeResponder(second_level)) as server:
        summary, _ = asyncio.run(refine_file(server.base_url, data, out, strategy="tree", pairs=None))
        # per row: the root, 3 children (no pass), 6 grandchildren (a pass): 9 refines, 10 critic
        assert roles(server) == Counter({"refiner": 27, "critic": 30})
    assert summary.refined == 3
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    records = traces(out)
    for row, record in zip(rows, records, strict=True):
        turn = record.turns[0]
        assert turn.stop_reason.value == "tree_pass" and turn.tree is not None
        assert row["output"] == turn.final == turn.tree.nodes[turn.tree.path[-1]].response
        assert turn.final.count("|") == 2 and record.schema == "coevol.trace/3"
        assert set(record.usage) == {"critic", "refiner"}
        assert record.usage["critic"].calls == 10 and record.usage["refiner"].calls == 9


def test_a_kill_mid_tree_then_a_rerun_sends_only_the_missing_calls(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(4))
    args = ["--strategy", "tree", "--model", "fake", "-q", "--concurrency", "4"]
    with ThreadedServer(responder=TreeResponder(second_level), latency=0.01) as server:
        ref = tmp_path / "ref.jsonl"
        done = run_cli("refine", data, "-o", ref, "--base-url", server.base_url, *args)
        assert done.returncode == 0, done.stderr
        total = server.count()
        assert total == 4 * 19

        out = tmp_path / "out.jsonl"
        start = server.count()
        proc = start_cli("refine", data, "-o", out, "--base-url", server.base_url, *args)
        assert kill_when(proc, server, start + total // 2)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        with Store(tmp_path / "out.jsonl.coevol.db") as store:
            kept = store.count_calls()
        assert kept > 0
        start = server.count()
        done = run_cli("refine", data, "-o", out, "--base-url", server.base_url, *args)
        assert done.returncode == 0, done.stderr
        assert server.count() - start == total - kept  # no finished node asked again
    assert out.read_bytes() == ref.read_bytes()
    trace = out.with_name("out.jsonl.trace.jsonl").read_bytes()
    assert trace == ref.with_name("ref.jsonl.trace.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        # CoEvol's debate, advice and edit make each child (6 calls); the three are the same edit,
        # valued once by the critic, which passes it.
        ({"expand": "coevol"}, {"critic": 2, "positive": 6, "critical": 6, "advisor": 3, "editor": 3}),
        # SPaR's refiner makes the children; the judge values each against the original (2 calls);
        # the critic is asked once, for the critique the refiner is shown.
        ({"value": "pairwise"}, {"critic": 1, "refiner": 3, "judge": 6}),
        # The CoEvol tree: CoEvol's children, the judge's preference as their value.
        (
            {"expand": "coevol", "value": "pairwise"},
            {"positive": 6, "critical": 6, "advisor": 3, "editor": 3, "judge": 2},
        ),
    ],
    ids=["coevol-expand", "pairwise-value", "coevol-tree"],
)
def test_the_coevol_tree_end_to_end_with_exact_calls(
    tmp_path: Path, tree: dict[str, str], expected: dict[str, int]
) -> None:
    def votes(response: str) -> Sequence[Sequence[Label]]:
        return [["Yes"] * 5] if "[edit]" in response else [["No"] * 5]

    def refine(parent: str, seed: int, nth: int) -> str:
        return f"{parent}|{seed} [edit]"  # the fake judge tells an edit by its mark

    fallback = CoEvolResponder(accept_up_to(1))
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(1))
    out = tmp_path / "out.jsonl"
    with ThreadedServer(responder=TreeResponder(votes, refine, fallback=fallback)) as server:
        summary, _ = asyncio.run(refine_file(server.base_url, data, out, strategy="tree", tree=tree))
        assert roles(server) == Counter(expected)
    assert summary.refined == 1
    turn = traces(out)[0].turns[0]
    assert turn.stop_reason.value == "tree_pass" and turn.tree is not None
    assert turn.tree.path == [0, 3]
    if tree.get("expand") == "coevol":
        assert turn.final.endswith(" [edit]")
        assert [n.same_as for n in turn.tree.nodes[1:]] == [None, 1, 1]
        assert turn.tree.nodes[1].iteration is not None and turn.tree.nodes[1].iteration.debate is not None


async def test_the_fingerprint_names_the_tree_settings_and_leaves_coevols_alone() -> None:
    """A rerun with other tree settings must not replay the stored outcomes of this one."""
    from coevol.config import load_config
    from coevol.engine.build import build_engine
    from coevol.testing import FakeOpenAIServer

    async with FakeOpenAIServer(model="fake") as server:

        async def fingerprint(**overrides: Any) -> str:
            engine = await build_engine(
                load_config(None, {"base_url": server.base_url, "model": "fake", **overrides})
            )
            try:
                return engine.fingerprint
            finally:
                await engine.aclose()

        coevol = await fingerprint()
        tree = await fingerprint(strategy="tree")
        deeper = await fingerprint(strategy="tree", tree={"depth": 4})
        spar_rule = await fingerprint(strategy="tree", tree={"label": "spar"})
        assert len({coevol, tree, deeper, spar_rule}) == 4
        assert await fingerprint(strategy="coevol") == coevol
