"""``coevol judge-check``: the built-in pairs, the figures and verdict (pure), and the command and
``--judge-check`` end to end against fake judges over loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.cli.exit_codes import EXIT_BUDGET, EXIT_JUDGE_POSITION, EXIT_JUDGE_UNUSABLE, EXIT_OK
from coevol.domain import DigitProbs, JudgeOrderTrace, JudgeTrace
from coevol.judge_check import CheckPair, JudgeVerdict, load_pairs, summarize
from coevol.judge_check.metrics import PairResult
from coevol.testing import ThreadedServer, identify_role
from coevol.testing.responders import digit_logprobs
from coevol.testing.server import Reply
from tests.compare_support import responses
from tests.engine_support import alpaca_rows, run_cli, write_jsonl

PAIRS = load_pairs()
BETTER = {p.better for p in PAIRS}


def test_the_built_in_pairs() -> None:
    assert len(PAIRS) >= 40
    assert len({p.id for p in PAIRS}) == len(PAIRS)
    categories = {p.category for p in PAIRS}
    assert {"arithmetic", "facts", "code", "truncated", "off-topic", "shorter-better"} <= categories
    assert all(p.better.strip() and p.worse.strip() and p.better != p.worse for p in PAIRS)
    shorter = sum(p.better_is_shorter for p in PAIRS)
    assert 15 <= shorter <= len(PAIRS) - 15  # both kinds, so length bias shows


# pure: figures and verdict --------------------------------------------------------------------
PAIR_SHORT = CheckPair("s", "t", "q", better="Yes.", worse="No, not at all, never.")
PAIR_LONG = CheckPair("l", "t", "q", better="A full and correct answer.", worse="No.")


def order(name: str, position: str | None, position1: float | None = None) -> JudgeOrderTrace:
    """One order in which the judge preferred ``position`` ("1", "2", "tie", None: unparseable)."""
    o = JudgeOrderTrace(name)
    if position is None:
        return o
    first, second = {"1": (1.0, 0.0), "2": (0.0, 1.0), "tie": (1.0, 1.0)}[position]
    o.verdict = position
    o.scores = (first, second) if name == "forward" else (second, first)  # (worse, better)
    if position1 is not None:
        o.probs = DigitProbs("1", position1, 1 - position1)
        q = 1 - position1 if name == "forward" else position1
        o.scores = (1 - q, q)
    return o


def judged(forward: str | None, reverse: str | None) -> JudgeTrace:
    return JudgeTrace([order("forward", forward), order("reverse", reverse)])


def test_a_judge_always_at_position_2_is_position_driven() -> None:
    result = summarize(
        "verdict", [PairResult(PAIR_SHORT, judged("2", "2")), PairResult(PAIR_LONG, judged("2", "2"))]
    )
    d = result.to_dict()
    assert result.verdict is JudgeVerdict.POSITION_DRIVEN
    assert (d["accuracy_forward"], d["accuracy_reverse"], d["accuracy"]) == (1.0, 0.0, 0.5)
    assert (d["position_consistency"], d["recency"], d["primacy"]) == (0.0, 2, 0)
    assert "second position" in d["advice"] and "--judge prob" in d["advice"]


def test_a_judge_that_picks_the_better_answer_is_usable() -> None:
    # better is second in the forward order, first in the reverse order
    result = summarize(
        "verdict", [PairResult(PAIR_SHORT, judged("2", "1")), PairResult(PAIR_LONG, judged("2", "1"))]
    )
    d = result.to_dict()
    assert result.verdict is JudgeVerdict.USABLE
    assert (d["accuracy"], d["position_consistency"], d["length_bias"]) == (1.0, 1.0, 0.0)


def test_length_bias_and_ties() -> None:
    """Right on the long-better pair, a tie on the short-better one: +100% length bias."""
    result = summarize(
        "verdict", [PairResult(PAIR_LONG, judged("2", "1")), PairResult(PAIR_SHORT, judged("tie", "tie"))]
    )
    d = result.to_dict()
    assert (d["accuracy_better_longer"], d["accuracy_better_shorter"], d["length_bias"]) == (1.0, 0.0, 1.0)
    assert d["accuracy"] == 0.5 and d["position_consistency"] == 1.0  # two ties are consistent
    assert result.verdict is JudgeVerdict.UNUSABLE and "chance" in d["advice"]


def test_mostly_unparseable_is_unusable() -> None:
    result = summarize(
        "verdict", [PairResult(PAIR_SHORT, judged(None, "1")), PairResult(PAIR_LONG, judged(None, None))]
    )
    assert result.verdict is JudgeVerdict.UNUSABLE
    assert result.unparseable == 3 and "first line" in result.to_dict()["advice"]


def test_a_failed_pair_is_left_out() -> None:
    result = summarize("verdict", [PairResult(PAIR_SHORT, None), PairResult(PAIR_LONG, judged("2", "1"))])
    assert (result.failed, result.accuracy, result.verdict) == (1, 1.0, JudgeVerdict.USABLE)


def prob_judged(position1_forward: float, position1_reverse: float) -> JudgeTrace:
    f = order("forward", "2", position1_forward)
    r = order("reverse", "2", position1_reverse)
    assert f.scores is not None and r.scores is not None
    mean = (f.scores[1] + r.scores[1]) / 2
    return JudgeTrace([f, r], 1 - mean, mean, margin=0.0)


def test_prob_a_leaning_judge_with_signal_is_usable() -> None:
    """Always position 2 by argmax, but 0.05 vs 0.35 for position 1 says which is better."""
    items = [PairResult(PAIR_SHORT, prob_judged(0.05, 0.35)), PairResult(PAIR_LONG, prob_judged(0.05, 0.35))]
    result = summarize("prob", items)
    d = result.to_dict()
    assert d["position_consistency"] == 0.0 and d["recency"] == 2  # the argmax is position-driven ...
    assert d["prob_accuracy"] == 1.0 and d["prob_margin"] == pytest.approx(0.15)  # ... the mean is not
    assert result.verdict is JudgeVerdict.USABLE


def test_prob_without_signal_is_position_driven() -> None:
    items = [PairResult(PAIR_SHORT, prob_judged(0.4, 0.39)), PairResult(PAIR_LONG, prob_judged(0.4, 0.39))]
    result = summarize("prob", items)
    assert result.prob_accuracy == 0.0 and result.verdict is JudgeVerdict.POSITION_DRIVEN
    assert "stronger judge model" in result.to_dict()["advice"]


# end to end -----------------------------------------------------------------------------------
def always_2(body: dict[str, Any]) -> str:
    return "<assistant 2>\nThe second one."


def knows_better(body: dict[str, Any]) -> str | Reply:
    """A judge that picks the built-in better answer (and a plain CoEvol-free 'ok' otherwise)."""
    if identify_role(body["messages"]) != "judge":
        return "ok"
    first, _ = responses(body)
    winner = "1" if first in BETTER else "2"
    if body.get("logprobs"):
        return Reply(f"<assistant {winner}>", logprobs=digit_logprobs(winner, 0.8 if winner == "1" else 0.2))
    return f"<assistant {winner}>\nIt is right."


def check(url: str, tmp: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    out = tmp / "check.json"
    proc = run_cli(
        "judge-check",
        "--base-url",
        url,
        "--model",
        "judge",
        "--store",
        tmp / "check.db",
        "--json",
        out,
        *extra,
    )
    return proc.returncode, " ".join(proc.stdout.split()), json.loads(out.read_text()) if out.exists() else {}


def test_cli_a_judge_always_at_position_2(tmp_path: Path) -> None:
    with ThreadedServer(responder=always_2) as server:
        code, text, doc = check(server.base_url, tmp_path)
        sent = server.count()
        again, _, _ = check(server.base_url, tmp_path)  # the store answers: nothing is paid twice
        assert server.count() == sent == 2 * len(PAIRS)
    assert code == again == EXIT_JUDGE_POSITION != 0
    assert "verdict: position-driven" in text
    assert doc["verdict"] == "position-driven" and doc["recency"] == len(PAIRS) and doc["pairs"] == len(PAIRS)


@pytest.mark.parametrize("kind", ["verdict", "prob"])
def test_cli_a_judge_that_knows_the_better_answer(tmp_path: Path, kind: str) -> None:
    with ThreadedServer(responder=knows_better) as server:
        code, text, doc = check(server.base_url, tmp_path, "--judge", kind)
    assert code == EXIT_OK
    assert "verdict: usable" in text
    assert doc["accuracy"] == 1.0 and doc["position_consistency"] == 1.0
    if kind == "prob":
        assert doc["prob_accuracy"] == 1.0 and doc["prob_margin"] == pytest.approx(0.3)


def test_cli_an_unusable_judge_exits_6(tmp_path: Path) -> None:
    with ThreadedServer(responder=lambda body: "Both answers have merits.") as server:
        code, text, doc = check(server.base_url, tmp_path, "--judge-reasks", "0")
    assert code == EXIT_JUDGE_UNUSABLE and doc["verdict"] == "unusable" and "verdict: unusable" in text


def _roles(server: ThreadedServer) -> list[str]:
    return [identify_role(r.body["messages"]) for r in server.requests]


def test_refine_judge_check_stops_before_any_refinement_call(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(3))
    with ThreadedServer(responder=always_2) as server:
        proc = run_cli(
            "refine", src, "-o", tmp_path / "out.jsonl", "--base-url", server.base_url, "--model", "m",
            "--judge-check", "--quiet",
        )  # fmt: skip
        roles = _roles(server)
    assert proc.returncode == EXIT_JUDGE_POSITION, proc.stderr
    assert set(roles) == {"judge"} and len(roles) == 2 * len(PAIRS)  # the check's calls, nothing else
    assert not (tmp_path / "out.jsonl").exists()
    assert "position-driven" in proc.stdout and "--judge-check-force" in proc.stderr


def test_refine_judge_check_force_goes_on_and_replays_the_check(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(2))
    args = ("refine", src, "-o", tmp_path / "out.jsonl", "--model", "m", "--judge-check", "--quiet")
    with ThreadedServer(responder=always_2) as server:
        stopped = run_cli(*args, "--base-url", server.base_url)
        before = server.count()
        forced = run_cli(*args, "--base-url", server.base_url, "--judge-check-force")
        roles = _roles(server)[before:]
    assert stopped.returncode == EXIT_JUDGE_POSITION
    assert forced.returncode == EXIT_OK, forced.stderr
    assert "editor" in roles  # the run went on ...
    assert roles.count("judge") < 2 * len(PAIRS)  # ... and the check's calls came from the store
    assert (tmp_path / "out.jsonl").exists()


def test_compare_judge_check_stops_before_judging_the_files(tmp_path: Path) -> None:
    from tests.compare_support import BASE_OUTPUTS, CAND_OUTPUTS, alpaca, write_rows

    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(CAND_OUTPUTS))
    with ThreadedServer(responder=always_2) as server:
        proc = run_cli(
            "compare", base, cand, "-o", tmp_path / "r.json", "--base-url", server.base_url, "--model", "m",
            "--judge-check", "--quiet",
        )  # fmt: skip
        sent = server.count()
    assert proc.returncode == EXIT_JUDGE_POSITION, proc.stderr
    assert sent == 2 * len(PAIRS) and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("command", ["refine", "compare"])
def test_max_budget_counts_the_judge_check_s_calls(tmp_path: Path, command: str) -> None:
    from tests.compare_support import BASE_OUTPUTS, CAND_OUTPUTS, alpaca, write_rows

    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(CAND_OUTPUTS))
    files = (base, cand) if command == "compare" else (base,)
    out = tmp_path / ("r.json" if command == "compare" else "out.jsonl")
    with ThreadedServer(responder=always_2) as server:
        proc = run_cli(
            command, *files, "-o", out, "--base-url", server.base_url, "--model", "m", "--judge-check",
            "--quiet", "--price-prompt", "1000", "--price-completion", "1000", "--max-budget", "0.5",
            "--concurrency", "1",
        )  # fmt: skip
        roles = _roles(server)
    assert proc.returncode == EXIT_BUDGET, proc.stderr
    assert set(roles) == {"judge"} and 0 < len(roles) < 2 * len(PAIRS)  # stopped inside the check
    assert not out.exists()


def test_judge_check_is_refused_with_ray() -> None:
    from coevol.config import Config
    from coevol.errors import ConfigError
    from coevol.executors.on_ray import check_ray_config

    with pytest.raises(ConfigError, match="coevol judge-check"):
        check_ray_config(Config(base_url="http://127.0.0.1:9/v1", model="m", judge_check=True))


def test_spread_takes_each_category_in_turn() -> None:
    from coevol.judge_check.metrics import spread

    first = spread(PAIRS, 8)
    assert [p.id for p in first] == [
        "arith-01", "fact-01", "code-01", "cut-01", "topic-01", "concise-01", "arith-02", "fact-02",
    ]  # fmt: skip
    assert spread(PAIRS, None) == PAIRS and spread(PAIRS, 1000) == PAIRS


def test_cli_limit(tmp_path: Path) -> None:
    with ThreadedServer(responder=always_2) as server:
        code, _, doc = check(server.base_url, tmp_path, "--limit", "6")
        assert server.count() == 12
    assert code == EXIT_JUDGE_POSITION and doc["pairs"] == 6


def test_prob_mostly_equal_is_unusable_and_says_why() -> None:
    equal = JudgeOrderTrace("forward", verdict="<equal>", scores=(0.5, 0.5), probs=DigitProbs(None, 0.0, 0.0))
    back = JudgeOrderTrace("reverse", verdict="<equal>", scores=(0.5, 0.5), probs=DigitProbs(None, 0.0, 0.0))
    trace = JudgeTrace([equal, back], 0.5, 0.5, margin=0.0)
    result = summarize("prob", [PairResult(PAIR_SHORT, trace), PairResult(PAIR_LONG, trace)])
    assert (result.verdict, result.no_digit, result.prob_accuracy) == (JudgeVerdict.UNUSABLE, 4, 0.0)
    assert "mostly answers <equal>" in result.to_dict()["advice"]
