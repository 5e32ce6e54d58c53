"""Keys go only where they were configured: two loopback servers, each records the headers it got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coevol.config import Config, RoleConfig, load_config
from coevol.domain import Role
from coevol.engine.build import build_engine
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS, coevol_cli

# Transport behaviour: every test runs through each HTTP client.
pytestmark = pytest.mark.usefixtures("http_transport")

TOP = "sk-top-SECRET-1a2b3c"
JUDGE = "sk-judge-SECRET-4d5e6f"
MSGS = [{"role": "user", "content": "hello"}]


def test_a_role_on_another_server_does_not_inherit_the_top_level_key() -> None:
    c = Config(
        base_url="http://a:1/v1", api_key_env="TOP", roles={Role.JUDGE: RoleConfig(base_url="http://b:2/v1")}
    )
    assert c.role("positive").api_key_env == "TOP"
    assert c.role("judge").api_key_env is None
    assert c.role("judge").base_url == "http://b:2/v1"


def test_a_role_on_the_same_server_inherits_it() -> None:
    c = Config(
        base_url="http://a:1/v1", api_key_env="TOP", roles={Role.JUDGE: RoleConfig(base_url="http://a:1/v1/")}
    )
    assert c.role("judge").api_key_env == "TOP"
    only_model = Config(base_url="http://a:1/v1", roles={Role.JUDGE: RoleConfig(model="big")})
    assert only_model.role("judge").api_key_env == "OPENAI_API_KEY"


def test_a_role_with_its_own_variable_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOP", TOP)
    monkeypatch.setenv("JUDGE", JUDGE)
    c = Config(
        base_url="http://a:1/v1",
        api_key_env="TOP",
        roles={Role.JUDGE: RoleConfig(base_url="http://b:2/v1", api_key_env="JUDGE")},
    )
    assert c.role("judge").api_key_env == "JUDGE"
    assert (c.api_key("judge"), c.api_key("editor")) == (JUDGE, TOP)
    assert (
        Config(base_url="http://a:1/v1", roles={Role.JUDGE: RoleConfig(base_url="http://b/v1")}).api_key(
            "judge"
        )
        is None
    )


@pytest.mark.parametrize("judge_env", [None, "COEVOL_T_JUDGE"])
async def test_each_server_receives_only_its_own_key(
    judge_env: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COEVOL_T_TOP", TOP)
    monkeypatch.setenv("COEVOL_T_JUDGE", JUDGE)
    async with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        config = Config(
            base_url=a.base_url,
            model="fake-model",
            api_key_env="COEVOL_T_TOP",
            roles={Role.JUDGE: RoleConfig(base_url=b.base_url, api_key_env=judge_env)},
        )
        engine = await build_engine(config)
        try:
            for role in ("positive", "critical", "advisor", "editor", "judge"):
                await engine.dispatcher(role, [*MSGS, {"role": "user", "content": role}])
        finally:
            await engine.aclose()
        a_auth = {r.authorization for r in a.requests}
        b_auth = {r.authorization for r in b.requests}
        b_headers = " ".join(" ".join(r.headers.values()) for r in b.requests)
    assert len(a.requests) == 4 and len(b.requests) == 1
    assert a_auth == {f"Bearer {TOP}"}
    assert b_auth == ({None} if judge_env is None else {f"Bearer {JUDGE}"})
    assert TOP not in b_headers


async def test_a_third_party_judge_never_sees_the_local_key_end_to_end(tmp_path: Path) -> None:
    """The judge's server wants a key the config never gave it: the run stops, saying what to set."""
    src = tmp_path / "data.json"
    src.write_text(json.dumps(ALPACA_ROWS), encoding="utf-8")
    out = tmp_path / "out.json"
    async with (
        FakeOpenAIServer(CoEvolResponder(accept_up_to(1)), api_key=TOP) as local,
        FakeOpenAIServer(CoEvolResponder(accept_up_to(1)), api_key=JUDGE) as third_party,
    ):
        cfg = tmp_path / "run.yaml"
        cfg.write_text(
            f"base_url: {local.base_url}\nmodel: fake-model\napi_key_env: COEVOL_T_TOP\n"
            f"roles:\n  judge:\n    base_url: {third_party.base_url}\n",
            encoding="utf-8",
        )
        code, stdout, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--config", str(cfg), "-q", env={"COEVOL_T_TOP": TOP}
        )
        seen = [r.headers for r in third_party.requests]
    assert seen, "the judge was asked"
    assert all("Authorization" not in h for h in seen)
    assert code == 1
    assert "no key was sent: set api_key_env for roles.judge" in err
    assert TOP not in stdout + err


def test_config_shows_which_variables_each_server_uses(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "base_url: http://a:1/v1\nroles:\n  judge:\n    base_url: http://b:2/v1\n", encoding="utf-8"
    )
    config = load_config(cfg)
    assert [config.role(r).api_key_env for r in ("positive", "judge")] == ["OPENAI_API_KEY", None]
