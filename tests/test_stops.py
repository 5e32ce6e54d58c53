"""The stop rules (``Guard``) and the run plan they come from: pure, exact messages."""

from __future__ import annotations

import pytest

from coevol.config import Config, Price, RoleConfig
from coevol.domain import Role
from coevol.engine.runplan import RunPlan, StopRules
from coevol.engine.stops import Guard
from coevol.errors import BudgetExceeded, ConfigError
from coevol.llm.types import Completion


def answer(prompt: int, completion: int) -> Completion:
    return Completion("ok", prompt_tokens=prompt, completion_tokens=completion)


def test_the_budget_counts_each_sent_answer_at_its_roles_price() -> None:
    guard = Guard(StopRules(max_budget=0.01), {"judge": (1.0, 2.0), "editor": (3.0, 0.0)})
    guard.after_send("judge", answer(1000, 1000))  # $0.003
    guard.after_send("positive", answer(10**9, 10**9))  # no price: free
    guard.after_send("editor", answer(1000, 5000))  # $0.003
    assert guard.spent == pytest.approx(0.006)
    with pytest.raises(BudgetExceeded) as info:
        guard.after_send("judge", answer(2000, 1000))  # $0.004: exactly the budget
    assert str(info.value) == "spent $0.0100 of --max-budget $0.01"
    with pytest.raises(BudgetExceeded):  # tripped stays tripped, for the next item or batch
        guard.check()


def test_whole_dollar_prices_sum_exactly_to_the_budget() -> None:
    """25 answers of $0.002 reach $0.05 at the 25th, not the 26th (no float drift)."""
    guard = Guard(StopRules(max_budget=0.05), {"judge": (1.0, 1.0)})
    for _ in range(24):
        guard.after_send("judge", answer(1000, 1000))
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0500 "):
        guard.after_send("judge", answer(1000, 1000))


def test_max_errors_counts_fresh_failures_and_names_their_causes() -> None:
    guard = Guard(StopRules(max_errors=2, max_unparseable=None), {}, items="pairs")
    guard.after_item(failure=("ServerError", "HTTP 500:   boom\n  again"))
    guard.after_item()  # a finished item, or a replayed failure: not counted
    guard.after_item(failure=("APITimeoutError", "timed out after 600 s"))
    with pytest.raises(BudgetExceeded) as info:
        guard.after_item(failure=("ServerError", "HTTP 502"))
    assert str(info.value) == (
        "3 pairs failed, more than --max-errors 2 "
        "(2 x ServerError: HTTP 500: boom again; 1 x APITimeoutError: timed out after 600 s)"
    )


def test_max_unparseable_waits_for_min_judged_then_stops() -> None:
    guard = Guard(StopRules(max_unparseable=0.25, min_judged=4), {})
    for _ in range(3):
        guard.after_item(judged=1, unparseable=1)  # 3 of 3, but fewer than 4 judged
    with pytest.raises(ConfigError) as info:
        guard.after_item(judged=1)
    assert str(info.value) == (
        "the judge gave no usable verdict in 3 of 4 comparisons (75%, more than max_unparseable 25%): "
        "check the judge model (it must answer with the verdict on its first line) and its prompt"
    )
    relaxed = Guard(StopRules(max_unparseable=None, min_judged=1), {})
    relaxed.after_item(judged=5, unparseable=5)  # None: never


def test_the_run_plan_resolves_roles_once_with_their_keys_and_prices() -> None:
    config = Config(
        base_url="http://top:8000/v1",
        model="m",
        price=Price(prompt=1.0, completion=2.0),
        max_budget=1.0,
        max_errors=3,
        roles={
            Role.JUDGE: RoleConfig(
                base_url="http://judge:9000/v1", model="big", price=Price(prompt=5.0, completion=15.0)
            )
        },
    )
    plan = RunPlan.of(config)
    editor, judge = plan.roles["editor"], plan.roles["judge"]
    assert [(s.base_url, s.api_key_env) for s in editor.servers] == [("http://top:8000/v1", "OPENAI_API_KEY")]
    # The top-level key never goes to a role's own server.
    assert [(s.base_url, s.api_key_env) for s in judge.servers] == [("http://judge:9000/v1", None)]
    assert (editor.model, judge.model) == ("m", "big")
    assert plan.prices() == {
        "positive": (1.0, 2.0),
        "critical": (1.0, 2.0),
        "advisor": (1.0, 2.0),
        "editor": (1.0, 2.0),
        "judge": (5.0, 15.0),
    }
    assert plan.stops == StopRules(max_budget=1.0, max_errors=3, max_unparseable=0.5, min_judged=20)
    assert list(RunPlan.of(config, roles=("judge",)).roles) == ["judge"] and plan.local_roles() == []
    assert RunPlan.of(Config()).local_roles() == ["positive", "critical", "advisor", "editor", "judge"]
