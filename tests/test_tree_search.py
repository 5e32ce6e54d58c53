"""The tree search on a deterministic responder: exact call counts, the node written, the trace."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from coevol.domain import StopReason
from coevol.loop import LoopSettings, Refinement
from coevol.prompts.render import Sample
from coevol.prompts.templates import load_prompts
from coevol.testing import Recorder
from coevol.testing.tree import Label, TreeResponder, all_votes
from coevol.tree.search import pairwise_value, tree_refine
from coevol.tree.settings import TreeSettings

P = load_prompts()
SAMPLE = Sample("Write one word in capitals.", "", "hello there")
NO = ("No",) * 5


def run(responder: TreeResponder, *, sample: Sample = SAMPLE, **tree: Any) -> tuple[Refinement, Recorder]:
    calls = Recorder(responder.as_generate())
    settings = LoopSettings(tree=TreeSettings(**tree))
    return asyncio.run(tree_refine(sample, calls, P, settings)), calls


def votes_sent(calls: Recorder) -> int:
    return sum(len(c.answer.choices()) for c in calls.of("critic") if c.answer is not None)


def by_depth(passing_depth: int, yes: int = 4) -> Any:
    """Every node at ``passing_depth`` gets ``yes`` Yes of 5; every other node five No."""

    def votes(response: str) -> Sequence[Sequence[Label]]:
        depth = response.count("|")
        return [["Yes"] * yes + ["No"] * (5 - yes)] if depth == passing_depth else [list(NO)]

    return votes


def test_a_root_that_passes_costs_one_critic_evaluation_and_no_refine() -> None:
    result, calls = run(TreeResponder(all_votes("Yes", "Yes", "Yes", "No", None)))
    assert calls.roles() == ["critic"]
    assert calls.calls[0].n == 5 and votes_sent(calls) == 5
    assert result.stop_reason is StopReason.ROOT_PASSES
    assert result.response == SAMPLE.response and result.accepted_edits == 0
    tree = result.tree
    assert tree is not None and [n.value for n in tree.nodes] == [0.75]
    assert tree.path == [0] and tree.result == 0
    assert [c.label for c in tree.nodes[0].critiques] == [True, True, True, False, None]
    assert [c.choice for c in tree.nodes[0].critiques] == [0, 1, 2, 3, 4]


def test_nothing_passes_breadth_first_15_refines_16_evaluations_original_kept() -> None:
    result, calls = run(TreeResponder(all_votes(*NO)))
    assert len(calls.of("refiner")) == 15
    assert len(calls.of("critic")) == 16 and votes_sent(calls) == 80
    assert result.stop_reason is StopReason.TREE_NO_PASS
    assert result.response == SAMPLE.response and result.accepted_edits == 0
    tree = result.tree
    assert tree is not None and len(tree.nodes) == 16
    assert [sum(n.depth == d for n in tree.nodes) for d in range(4)] == [1, 3, 6, 6]
    # every value is 0: the highest value, ties to the later node, is the last one made
    assert tree.result == 15 and tree.path == [0, 2, 8, 15]
    kept = [n.id for n in tree.nodes if n.kept]
    assert kept == [0, 2, 3, 8, 9]  # the root, then per level the two later ones (ties to later)


def test_nothing_passes_depth_first_21_refines() -> None:
    result, calls = run(TreeResponder(all_votes(*NO)), algorithm="dfs")
    assert len(calls.of("refiner")) == 21
    assert len(calls.of("critic")) == 22
    assert result.stop_reason is StopReason.TREE_NO_PASS and result.response == SAMPLE.response


def test_a_first_level_that_passes_costs_3_refines_4_evaluations_and_writes_the_later_tie() -> None:
    result, calls = run(TreeResponder(by_depth(1)))
    assert len(calls.of("refiner")) == 3 and len(calls.of("critic")) == 4
    tree = result.tree
    assert tree is not None
    assert [n.value for n in tree.nodes] == [0.0, 0.8, 0.8, 0.8]
    assert result.stop_reason is StopReason.TREE_PASS and result.accepted_edits == 1
    assert tree.result == 3 and tree.path == [0, 3]
    assert result.response == tree.nodes[3].response != tree.nodes[2].response


def test_siblings_get_distinct_seeds_and_refine_from_the_majority_critique() -> None:
    _, calls = run(TreeResponder(by_depth(1)))
    seeds = [c.seed for c in calls.of("refiner")]
    assert len(set(seeds)) == 3 and None not in seeds
    refine = calls.of("refiner")[0].messages
    assert [m["role"] for m in refine] == ["user", "assistant", "user"]
    assert refine[1]["content"].endswith("Final Judgement (if the Output accurately follows the Prompt): No")


def test_a_pass_at_depth_two_breadth_first_and_depth_first() -> None:
    bfs, bfs_calls = run(TreeResponder(by_depth(2, yes=3)))
    assert len(bfs_calls.of("refiner")) == 9 and len(bfs_calls.of("critic")) == 10
    assert bfs.tree is not None and bfs.tree.path == [0, 2, 9]  # level 2 ties: the later node
    dfs, dfs_calls = run(TreeResponder(by_depth(2, yes=3)), algorithm="dfs")
    assert len(dfs_calls.of("refiner")) == 6 and len(dfs_calls.of("critic")) == 7
    assert dfs.tree is not None and dfs.tree.path == [0, 3, 6]
    assert dfs.stop_reason is bfs.stop_reason is StopReason.TREE_PASS


def test_a_tie_draws_all_votes_again() -> None:
    draws: list[list[Label]] = [["Yes", "Yes", "No", "No", None], ["Yes", "Yes", "Yes", "No", "No"]]
    result, calls = run(TreeResponder(lambda response: draws))
    assert calls.roles() == ["critic", "critic"]
    assert result.stop_reason is StopReason.ROOT_PASSES
    root = result.tree.nodes[0] if result.tree else None
    assert root is not None and root.draws == 2 and root.value == 0.6
    assert [c.draw for c in root.critiques] == [0] * 5 + [1] * 5
    assert root.shown == 5  # the first Yes of the deciding draw


def test_a_root_still_tied_after_three_draws_is_undecided_and_a_tied_child_is_dropped() -> None:
    tie: list[Label] = ["Yes", "No", None, None, None]
    result, calls = run(TreeResponder(all_votes(*tie)))
    assert calls.roles() == ["critic"] * 3
    assert result.stop_reason is StopReason.ROOT_UNDECIDED and result.response == SAMPLE.response

    def votes(response: str) -> Sequence[Sequence[Label]]:
        return [list(NO)] if "|" not in response else [tie]

    result, calls = run(TreeResponder(votes), depth=1)
    assert len(calls.of("critic")) == 1 + 3 * 3
    tree = result.tree
    assert tree is not None
    assert [n.dropped for n in tree.nodes[1:]] == ["the critic's votes stayed tied after 3 draws"] * 3
    assert result.stop_reason is StopReason.TREE_NO_PASS and tree.result == 0


def test_a_refiner_without_markers_is_a_failed_try_and_three_skip_the_child() -> None:
    result, calls = run(TreeResponder(all_votes(*NO), lambda parent, seed, nth: None))
    assert calls.roles().count("refiner") == 9 and calls.roles().count("critic") == 1
    tree = result.tree
    assert tree is not None and len(tree.nodes) == 4
    assert all(n.response is None and len(n.refine) == 3 and len(set(n.seeds)) == 3 for n in tree.nodes[1:])
    assert "no output between [[start]] and [[end]] in 3 tries" in (tree.nodes[1].dropped or "")
    assert result.stop_reason is StopReason.TREE_NO_PASS

    def second_try(parent: str, seed: int, nth: int) -> str | None:
        return None if nth < 3 else f"{parent}|{seed}"  # each child's first try fails

    result, calls = run(TreeResponder(by_depth(1), second_try), depth=1)
    assert calls.roles().count("refiner") == 6 and calls.roles().count("critic") == 4
    assert result.stop_reason is StopReason.TREE_PASS
    assert result.tree is not None and all(len(n.refine) == 2 for n in result.tree.nodes[1:])


def test_identical_children_are_valued_once() -> None:
    same = TreeResponder(all_votes(*NO), lambda parent, seed, nth: f"{parent}|same")
    result, calls = run(same)
    assert calls.roles().count("refiner") == 15
    assert calls.roles().count("critic") == 4  # the root, then one distinct response per level
    tree = result.tree
    assert tree is not None
    assert [n.same_as for n in tree.nodes[1:4]] == [None, 1, 1]
    assert all(n.value == 0.0 for n in tree.nodes)


def test_a_child_equal_to_the_root_takes_the_roots_value() -> None:
    back = TreeResponder(all_votes(*NO), lambda parent, seed, nth: SAMPLE.response)
    result, calls = run(back, depth=1)
    assert calls.roles().count("critic") == 1
    assert result.tree is not None and [n.same_as for n in result.tree.nodes[1:]] == [0, 0, 0]


def _shape(result: Refinement) -> Any:
    """The tree without what only says how the votes travelled (seeds, choice indexes)."""
    assert result.tree is not None
    nodes = []
    for n in result.tree.nodes:
        d = n.to_dict()
        d["critiques"] = [(c.answer.text, c.label, c.draw) for c in n.critiques]
        nodes.append(d)
    return result.response, result.stop_reason, result.tree.path, nodes


@pytest.mark.parametrize(("honour_n", "use_n"), [(False, True), (True, False)])
def test_n_or_separate_requests_build_the_same_tree(honour_n: bool, use_n: bool) -> None:
    """A server that honours n (one request per evaluation), one that answers one choice (the
    rest asked one by one), and --no-tree-n (one request per vote) give the same tree."""
    policy = by_depth(2, yes=3)
    one, one_calls = run(TreeResponder(policy))
    other, other_calls = run(TreeResponder(policy, honour_n=honour_n), use_n=use_n)
    assert _shape(one) == _shape(other)
    assert len(one_calls.of("critic")) == 10 and votes_sent(one_calls) == 50
    assert len(other_calls.of("critic")) == 50 and votes_sent(other_calls) == 50
    assert [c.n for c in other_calls.of("critic")[:2]] == ([5, 1] if use_n else [1, 1])


def test_pairwise_value_is_the_both_orders_preference() -> None:
    from coevol.domain import JudgeTrace

    assert pairwise_value(JudgeTrace([], 0.0, 1.0)) == 1.0
    assert pairwise_value(JudgeTrace([], 0.5, 1.0)) == pytest.approx(2 / 3)
    assert pairwise_value(JudgeTrace([], 1.0, 1.0)) == 0.5
    assert pairwise_value(JudgeTrace([], 0.0, 0.0)) == 0.5
    assert pairwise_value(JudgeTrace([])) is None


def test_a_child_too_long_for_the_context_is_dropped_not_the_sample() -> None:
    from coevol.errors import ContextLengthError

    inner = TreeResponder(by_depth(1), lambda parent, seed, nth: f"{parent}|{'long ' * (nth == 0)}{seed}")
    generate = inner.as_generate()

    async def script(
        role: str, messages: Any, *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Any:
        if role == "critic" and "long" in messages[0]["content"]:
            raise ContextLengthError("HTTP 400: maximum context length is 4096 tokens")
        return await generate(role, messages, attempt=attempt, seed=seed, n=n)

    result = asyncio.run(tree_refine(SAMPLE, script, P, LoopSettings(tree=TreeSettings())))
    tree = result.tree
    assert tree is not None and result.stop_reason is StopReason.TREE_PASS
    dropped = [n for n in tree.nodes if n.dropped]
    assert len(dropped) == 1 and "outgrew the model's context" in (dropped[0].dropped or "")
    assert dropped[0].response is not None and "long" in dropped[0].response


def test_pairwise_value_asks_the_critic_once_per_expanded_node_for_the_refiners_critique() -> None:
    from coevol.testing.responders import CoEvolResponder, accept_up_to

    responder = TreeResponder(
        all_votes(*NO),
        lambda parent, seed, nth: f"{parent}|{seed} [edit]",
        fallback=CoEvolResponder(accept_up_to(1)),
    )
    result, calls = run(responder, value="pairwise")
    assert calls.roles().count("critic") == 1 and calls.roles().count("refiner") == 3
    assert calls.roles().count("judge") == 6
    tree = result.tree
    assert tree is not None and len(tree.nodes[0].critiques) == 5 and tree.nodes[0].value == 0.5
    assert result.stop_reason is StopReason.TREE_PASS and [n.value for n in tree.nodes[1:]] == [1.0] * 3


def test_a_conversation_gets_a_tree_per_assistant_turn_seeing_the_refined_turns_before() -> None:
    from coevol.conversation import ConversationSettings
    from coevol.domain import Example, Turn
    from coevol.multiturn import refine_example

    turns = [
        Turn("user", "Say hi."),
        Turn("assistant", "hello"),
        Turn("user", "Again, louder."),
        Turn("assistant", "hello!"),
    ]
    example = Example(0, 1, "messages", turns, {})
    responder = TreeResponder(by_depth(1, yes=5))
    calls = Recorder(responder.as_generate())
    outcome = asyncio.run(
        refine_example(example, calls, P, LoopSettings(tree=TreeSettings()), ConversationSettings())
    )
    assert [t.tree is not None for t in outcome.record.turns] == [True, True]
    assert outcome.accepted_edits == 2 and len(calls.of("refiner")) == 6 and len(calls.of("critic")) == 8
    first = outcome.turns[1].content
    assert first.startswith("hello|") and outcome.turns[3].content.startswith("hello!|")
    # the second turn's critic saw the refined first turn in the conversation window
    second_critic = [c for c in calls.of("critic") if "Again, louder." in c.messages[0]["content"]]
    assert second_critic and all(first in c.messages[0]["content"] for c in second_critic)
    assert [p["rejected"][0]["content"] for p in outcome.pairs] == ["hello", "hello!"]
    assert outcome.pairs[1]["prompt"][1] == {"role": "assistant", "content": first}
