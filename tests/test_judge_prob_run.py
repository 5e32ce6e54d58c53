"""``--judge prob`` end to end over the fake server: a judge with a strong lean towards position 2.

The fake judge always writes ``<assistant 2>``; its probabilities lean 80/20 towards position 2 and
move 15 points towards whichever position holds the response its policy truly prefers. An
unbiased judge with that policy accepts the edits it prefers; the discrete both-orders rule sees a
tie in every pair and keeps every original, while the probability read in both orders accepts
exactly the edits the unbiased judge would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.errors import LogprobsMissing
from coevol.roles.agents import JudgeKind
from coevol.testing import CoEvolResponder, ThreadedServer, hashed_policy, identify_role
from coevol.testing.responders import PositionBiasedJudge, digit_logprobs
from coevol.testing.server import Reply
from tests.engine_support import alpaca_rows, refine_file, run_cli, write_jsonl

ROWS = 12


def _run(url: str, tmp: Path, name: str, **overrides: Any) -> list[dict[str, Any]]:
    src = write_jsonl(tmp / "in.jsonl", alpaca_rows(ROWS))
    out = tmp / name / "out.jsonl"
    asyncio.run(refine_file(url, src, out, **overrides))
    trace = out.with_name("out.jsonl.trace.jsonl")
    records = [orjson.loads(line) for line in trace.read_bytes().splitlines()]
    return sorted(records, key=lambda r: int(r["index"]))


def _accepted(records: list[dict[str, Any]]) -> list[int]:
    return [r["accepted_rounds"] for r in records]


def test_prob_accepts_what_an_unbiased_judge_prefers_and_verdict_keeps_ties(tmp_path: Path) -> None:
    with ThreadedServer(responder=CoEvolResponder(hashed_policy)) as fair:
        unbiased = _run(fair.base_url, tmp_path, "fair", judge="verdict")
    expected = _accepted(unbiased)
    assert any(expected) and not all(expected)  # the policy accepts some edits and rejects others

    with ThreadedServer(responder=PositionBiasedJudge(CoEvolResponder(hashed_policy))) as biased:
        prob = _run(biased.base_url, tmp_path, "prob", judge="prob")
        judge_bodies = [r.body for r in biased.requests if identify_role(r.body["messages"]) == "judge"]
        other_bodies = [r.body for r in biased.requests if identify_role(r.body["messages"]) != "judge"]
        verdict = _run(biased.base_url, tmp_path, "verdict", judge="verdict")

    assert _accepted(prob) == expected
    assert _accepted(verdict) == [0] * ROWS
    assert {r["turns"][0]["stop_reason"] for r in verdict} == {"rejected"}
    assert all(b["logprobs"] is True and b["top_logprobs"] == 10 for b in judge_bodies)
    assert not any("logprobs" in b for b in other_bodies)

    # the trace keeps, per order, both digit probabilities, the raw alternatives, the verdict line
    judge = prob[0]["turns"][0]["iterations"][0]["judge"]
    assert prob[0]["schema"] == "coevol.trace/3"
    assert judge["margin"] == 0.0  # written only by --judge prob
    for order in judge["orders"]:
        probs = order["probs"]
        assert probs["token"] == "2" and probs["line"] == "<assistant 2>"
        assert probs["p1"] + probs["p2"] == pytest.approx(1.0)
        assert probs["p1"] in (pytest.approx(0.35), pytest.approx(0.05))
        assert [t for t, _ in probs["top"]] == ["2", "1"]
    mean = (1 - judge["orders"][0]["probs"]["p1"] + judge["orders"][1]["probs"]["p1"]) / 2
    assert judge["score_edited"] == pytest.approx(mean)


def test_the_margin_rejects_a_mean_below_it(tmp_path: Path) -> None:
    """The biased judge's mean for a preferred edit is 0.65: a margin of 0.2 rejects it."""
    with ThreadedServer(responder=PositionBiasedJudge(CoEvolResponder(hashed_policy))) as biased:
        records = _run(biased.base_url, tmp_path, "margin", judge="prob", judge_margin=0.2)
    assert _accepted(records) == [0] * ROWS


def test_a_rerun_replays_the_judge_from_the_store(tmp_path: Path) -> None:
    with ThreadedServer(responder=PositionBiasedJudge(CoEvolResponder(hashed_policy))) as biased:
        first = _run(biased.base_url, tmp_path, "again", judge="prob")
        sent = biased.count()
        (tmp_path / "again" / "out.jsonl").unlink()
        second = _run(biased.base_url, tmp_path, "again", judge="prob")
        assert biased.count() == sent
    assert _accepted(first) == _accepted(second)


def test_a_server_without_logprobs_is_refused_at_the_first_judge_call(tmp_path: Path) -> None:
    with ThreadedServer(responder=CoEvolResponder(hashed_policy), logprobs=False) as plain:
        with pytest.raises(LogprobsMissing, match=r"returned no logprobs.*--judge verdict"):
            _run(plain.base_url, tmp_path, "refused", judge="prob", concurrency=1)
        judge_calls = [r for r in plain.requests if identify_role(r.body["messages"]) == "judge"]
        assert 1 <= len(judge_calls) <= 2  # the two orders of the first sample, nothing after


def test_cli_refusal_is_one_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(2))
    with ThreadedServer(responder=CoEvolResponder(hashed_policy), logprobs=False) as plain:
        proc = run_cli(
            "refine", src, "-o", tmp_path / "out.jsonl", "--base-url", plain.base_url, "--model", "m",
            "--judge", "prob", "--quiet",
        )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--judge verdict" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_store_keeps_logprobs_and_an_old_store_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    from coevol.llm.types import Completion, TokenLogprob
    from coevol.store.sqlite import Store

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, role TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO calls VALUES ('old', 'judge', 'm', '<assistant 1>', 3, 4, 'stop', 0)")
    db.commit()
    db.close()
    tokens = (TokenLogprob("2", -0.1, (("2", -0.1), ("1", -2.5))),)
    with Store(path) as store:
        old = store.get_call("old")
        assert old is not None and old.text == "<assistant 1>" and old.logprobs is None
        store.put_call("new", "judge", "m", Completion("<assistant 2>", 1, 2, "stop", logprobs=tokens))
        buffered = store.get_call("new")
        assert buffered is not None and buffered.logprobs == tokens
        store.flush()
    with Store(path) as store:
        stored = store.get_call("new")
        assert stored is not None and stored.logprobs == tokens and stored.cached


def _biased_plus_judge(body: dict[str, Any]) -> Reply:
    """Always ``<assistant 2>``; P(position 1) leans 80/20 to position 2, moved 15 points towards
    the response with more plus signs (none when equal)."""
    from tests.compare_support import responses

    first, second = responses(body)
    gap = first.count("+") - second.count("+")
    position1 = 0.2 + (0.15 if gap > 0 else -0.15 if gap < 0 else 0.0)
    return Reply("<assistant 2>", logprobs=digit_logprobs("2", position1))


@pytest.mark.parametrize(
    ("kind", "expected"), [("prob", ["win", "loss", "win", "loss", "tie", "tie"]), ("verdict", ["tie"] * 6)]
)
async def test_compare_decides_each_pair_by_probability(
    tmp_path: Path, kind: JudgeKind, expected: list[str]
) -> None:
    from coevol.compare.run import acompare_files
    from coevol.config import Config
    from coevol.testing import FakeOpenAIServer
    from tests.compare_support import BASE_OUTPUTS, CAND_OUTPUTS, alpaca, write_rows

    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(CAND_OUTPUTS))
    async with FakeOpenAIServer(_biased_plus_judge) as server:
        config = Config(base_url=server.base_url, model="judge-model", judge=kind)
        run = await acompare_files(base, [cand], tmp_path / "r.json", config)
    assert [u["outcome"] for u in run.document["candidates"][0]["units"]] == expected


def test_show_report_and_audit_show_the_probabilities(tmp_path: Path) -> None:
    from coevol.audit import JudgeAudit
    from coevol.domain import TraceRecord
    from coevol.report.page import _judge, _judge_table

    with ThreadedServer(responder=PositionBiasedJudge(CoEvolResponder(hashed_policy))) as biased:
        records = _run(biased.base_url, tmp_path, "shown", judge="prob", judge_margin=0.1)
    audit = JudgeAudit()
    for record in records:
        audit.add_record(TraceRecord.from_dict(record))
    # every pair: P(position 1) is 0.05 in one order and 0.35 in the other, a mean lean of -0.3
    assert audit.comparisons > 0 and audit.prob_pairs == audit.comparisons
    assert audit.prob_position_bias == pytest.approx(-0.3)
    assert "mean position bias in probability" in _judge_table(audit.to_dict())
    assert "-0.300" in _judge_table(audit.to_dict())

    judged = TraceRecord.from_dict(records[0]).turns[0].iterations[0].judge
    assert judged is not None
    page = _judge(judged)
    assert page is not None and page["margin"] == 0.1
    assert page["prob_mean"] == pytest.approx(judged.score_edited)
    assert page["orders"][0]["probs"]["token"] == "2"

    shown = run_cli("show", tmp_path / "shown" / "out.jsonl.trace.jsonl", "--index", "0")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "p('1')=0.050 p('2')=0.950 at token '2'" in text and "top_logprobs: '2' -0.05, '1' -3.00" in text
    assert "-> P(edited preferred)=0.950" in text
    assert "mean P(edited preferred) over both orders" in text and "needs more than 0.600" in text
