"""The trace and the stored outcome, declared once (``coevol.domain``, ``ExampleOutcome``): golden bytes
written by the hand-written codecs this declaration replaced, strict fields, and the versions.

``data/trace_v2.jsonl`` and ``data/outcome_v2.jsonl`` were written by coevol 0.2 (main at
``4f2315d``): 42 trace lines and the 42 stored outcomes of the same rows, from real runs against
the fake server (verdict and score judges, early exit, an ablation mode, a conversation, injected
faults) and from scripted loops (context length before and after an accepted edit, a failed call
with escape codes in its message, an unparseable judge, fractional scores). Their rows carry ids
of every JSON type (a 2**70 integer too) and text with control characters, line separators,
markup and emoji. ``data/trace_v3_tree.jsonl`` and ``data/outcome_v3_tree.jsonl`` were written by
the first ``coevol.trace/3`` code (main at ``95bd0af``): tree searches (SPaR's, depth-first with
tied critics, and the CoEvol expansion valued pairwise) over rows of the same kinds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.domain import (
    MAX_ROUNDS,
    READABLE_SCHEMAS,
    SCHEMA,
    JudgeOrderTrace,
    Status,
    StopReason,
    TraceRecord,
)
from coevol.errors import TraceSchemaError
from coevol.io import jsonrow
from coevol.multiturn import ExampleOutcome

DATA = Path(__file__).parent / "data"


def _lines(name: str) -> list[bytes]:
    return [line for line in (DATA / name).read_bytes().splitlines() if line]


TRACE_V2, OUTCOMES_V2 = _lines("trace_v2.jsonl"), _lines("outcome_v2.jsonl")
TRACE_V3, OUTCOMES_V3 = _lines("trace_v3_tree.jsonl"), _lines("outcome_v3_tree.jsonl")
V2, NOW = b'"schema":"coevol.trace/2"', f'"schema":"{SCHEMA}"'.encode()


def as_read(line: bytes) -> bytes:
    """A readable line as this coevol writes it back: a /2 line reads as the current version."""
    return line.replace(V2, NOW, 1)


def test_the_golden_files_cover_what_a_trace_holds() -> None:
    records = [TraceRecord.from_dict(jsonrow.loads(line)) for line in TRACE_V2]
    assert {r.status for r in records} == set(Status)
    assert {t.stop_reason for r in records for t in r.turns} >= {
        StopReason.TURNED_DOWN,
        StopReason.MAX_ROUNDS,
        StopReason.CONTEXT_LENGTH,
        StopReason.ERROR,
        StopReason.JUDGE_UNPARSEABLE,
        StopReason.SINGLE_PASS,
    }
    assert {type(r.id) for r in records} == {str, int, float, dict, type(None)}
    assert 2**70 in {r.id for r in records if isinstance(r.id, int)}
    judged = [o for r in records for t in r.turns for it in t.iterations if it.judge for o in it.judge.orders]
    assert any(o.scores == (7.5, 8.25) for o in judged) and any(o.scores is None for o in judged)
    assert any(it.judge.skipped_reverse for r in records for t in r.turns for it in t.iterations if it.judge)


def test_the_tree_golden_file_holds_trees() -> None:
    records = [TraceRecord.from_dict(jsonrow.loads(line)) for line in TRACE_V3]
    trees = [t.tree for r in records for t in r.turns if t.tree is not None]
    assert len(trees) == len(TRACE_V3) and {r.schema for r in records} == {"coevol.trace/3"}
    nodes = [n for tree in trees for n in tree.nodes]
    assert any(n.critiques for n in nodes) and any(n.judge for n in nodes) and any(n.iteration for n in nodes)
    assert any(n.same_as is not None for n in nodes)


@pytest.mark.parametrize("line", TRACE_V2 + TRACE_V3, ids=lambda _: "")
def test_a_line_written_before_parses_and_writes_back_byte_for_byte(line: bytes) -> None:
    record = TraceRecord.from_dict(jsonrow.loads(line))
    assert record.to_json() == as_read(line)
    assert jsonrow.dumps(record.to_dict()) == as_read(line)  # what the dict holds, through jsonrow


@pytest.mark.parametrize(
    ("payload", "trace"),
    [(p, TRACE_V2) for p in OUTCOMES_V2] + [(p, TRACE_V3) for p in OUTCOMES_V3],
    ids=lambda _: "",
)
def test_a_stored_outcome_written_before_replays_byte_for_byte(payload: bytes, trace: list[bytes]) -> None:
    outcome = ExampleOutcome.from_payload(jsonrow.loads(payload))
    assert jsonrow.dumps(outcome.to_payload()) == as_read(payload)
    assert outcome.to_payload_json() == as_read(payload)  # the runner's path to the store
    assert outcome.record.to_json() in map(as_read, trace)  # the store replays what the trace holds


def test_usage_is_written_sorted_by_role_whatever_the_order_it_was_counted_in() -> None:
    record = TraceRecord.from_dict(jsonrow.loads(TRACE_V2[0]))
    record.usage = dict(reversed(record.usage.items()))
    assert record.to_json() == as_read(TRACE_V2[0])


def test_id_is_written_only_when_the_row_has_one() -> None:
    record = TraceRecord(index=0, line=1, status=Status.KEPT, accepted_edits=0)
    assert b'"id"' not in record.to_json()
    record.id = 0
    assert record.to_json().endswith(b',"id":0}')
    assert orjson.loads(record.to_json())["schema"] == SCHEMA


def test_both_versions_read_and_the_current_one_is_written() -> None:
    assert READABLE_SCHEMAS == ("coevol.trace/2", SCHEMA)
    assert TraceRecord.from_dict(jsonrow.loads(TRACE_V2[0])).schema == SCHEMA
    with pytest.raises(TraceSchemaError, match=r"schema 'coevol\.trace/4'"):
        TraceRecord.from_dict({**jsonrow.loads(TRACE_V2[0]), "schema": "coevol.trace/4"})


def test_a_turn_without_a_tree_writes_no_tree_key() -> None:
    record = TraceRecord.from_dict(jsonrow.loads(TRACE_V3[0]))
    assert b'"tree":' in record.to_json()
    for turn in record.turns:
        turn.tree = None
    assert b'"tree":' not in record.to_json()


def _line() -> dict[str, Any]:
    return dict(jsonrow.loads(TRACE_V2[0]))


IT = ["turns", 0, "iterations", 0]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["index"], True),  # a bool is not a count
        (["index"], 1.0),
        (["line"], -1),
        (["accepted_rounds"], -1),
        (["turns", 0, "accepted_rounds"], MAX_ROUNDS + 1),
        (["turns", 0, "turn"], "1"),
        ([*IT, "accepted"], "yes"),
        ([*IT, "accepted"], 1),
        ([*IT, "edited"], 0),
        ([*IT, "usage", "judge", "calls"], -2),
        ([*IT, "usage", "judge", "prompt_tokens"], "10"),
        ([*IT, "judge", "orders", 0, "scores"], [0.0, 1.0]),
        ([*IT, "judge", "orders", 0, "scores"], {"previous": 0.0}),
        ([*IT, "judge", "orders", 0, "scores"], {"previous": True, "edited": 1.0}),
        ([*IT, "judge", "orders", 0, "attempts", 0], "an answer"),
        ([*IT, "judge", "skipped_reverse"], "false"),
        (["roles", "judge", "endpoint"], 5),
        (["failure"], {"type": "ServerError", "message": ["x"]}),
        (["turns", 0], None),
    ],
)
def test_a_mistyped_field_refuses_the_whole_line(path: list[Any], value: Any) -> None:
    record = copy.deepcopy(_line())
    record.setdefault("roles", {}).setdefault("judge", {"model": "m", "endpoint": "e"})
    target: Any = record
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(TraceSchemaError, match="malformed trace record"):
        TraceRecord.from_dict(record)


def test_the_refusal_names_the_field_never_the_hostile_value() -> None:
    record = _line()
    record["turns"][0]["final"] = ["\x1b[2J\x1b]0;pwned\x07" * 1000]
    with pytest.raises(TraceSchemaError) as info:
        TraceRecord.from_dict(record)
    message = str(info.value)
    assert message.startswith("malformed trace record: turns.0.final: ")
    assert "\x1b" not in message and "pwned" not in message and len(message) < 200


def test_a_non_finite_score_is_refused() -> None:
    order = {"order": "forward", "attempts": [], "scores": {"previous": float("inf"), "edited": 1.0}}
    record = _line()
    record["turns"][0]["iterations"][0]["judge"]["orders"][0] = order
    with pytest.raises(TraceSchemaError, match="finite"):
        TraceRecord.from_dict(record)


def test_an_order_quoted_in_the_preference_pairs_is_the_traces_own() -> None:
    order = JudgeOrderTrace("reverse", [], "assistant 1", (0.0, 1.0))
    assert order.to_dict() == {
        "order": "reverse",
        "attempts": [],
        "verdict": "assistant 1",
        "scores": {"previous": 0.0, "edited": 1.0},
        "error": None,
    }
