"""Configuration: YAML round trip, validation messages, CLI precedence, per-role models and endpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from coevol.cli.main import main
from coevol.config import Config, ConversationConfig, Price, RoleConfig, load_config
from coevol.domain import COEVOL_ROLES, Role
from coevol.errors import ConfigError
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import EDIT_MARK, CoEvolResponder, accept_up_to, identify_role

from .conftest import coevol_cli

FULL = Config(
    base_url="http://localhost:8000/v1",
    model="base-model",
    api_key_env="MY_KEY",
    max_tokens=500,
    temperature=0.2,
    top_p=0.9,
    seed=7,
    roles={
        Role.JUDGE: RoleConfig(model="judge-model", base_url="http://judge:9000/v1", api_key_env="JUDGE_KEY"),
        Role.EDITOR: RoleConfig(temperature=0.0, max_tokens=2000, merge_system=True, price=Price(prompt=1)),
    },
    mode="debate",
    max_rounds=2,
    judge="score",
    judge_reasks=1,
    judge_early_exit=True,
    prompts_dir=Path("prompts"),
    conversation=ConversationConfig(window_rounds=2, max_turns=4, max_tokens=3000),
    concurrency=8,
    rpm=60,
    price=Price(prompt=0.5, completion=1.5),
)


@pytest.mark.parametrize("config", [Config(), FULL], ids=["defaults", "everything"])
def test_yaml_round_trip(config: Config) -> None:
    text = config.to_yaml()
    back = Config.from_yaml(text)
    assert back == config
    assert back.to_yaml() == text


def test_defaults_are_the_papers() -> None:
    c = Config()
    assert (c.max_tokens, c.temperature, c.top_p, c.max_rounds, c.mode, c.judge) == (
        1000,
        0.0,
        1.0,
        3,
        "full",
        "verdict",
    )
    assert c.conversation == ConversationConfig(window_rounds=3, max_turns=None, max_tokens=None)


def test_role_falls_back_to_the_top_level() -> None:
    judge, editor, advisor = FULL.role("judge"), FULL.role("editor"), FULL.role("advisor")
    assert (judge.model, judge.base_url, judge.api_key_env) == (
        "judge-model",
        "http://judge:9000/v1",
        "JUDGE_KEY",
    )
    assert (judge.temperature, judge.max_tokens, judge.top_p, judge.seed) == (0.2, 500, 0.9, 7)
    assert (editor.model, editor.base_url, editor.temperature, editor.max_tokens) == (
        "base-model",
        "http://localhost:8000/v1",
        0.0,  # an explicit 0 is not "unset"
        2000,
    )
    assert (editor.merge_system, advisor.merge_system) == (True, False)
    assert editor.price == Price(prompt=1) and advisor.price == Price(prompt=0.5, completion=1.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("modle: x\n", "unknown key 'modle'"),
        ("roles:\n  judge:\n    tempreature: 0.5\n", "unknown key 'roles.judge.tempreature'"),
        ("roles:\n  editor:\n    price:\n      input: 1\n", "unknown key 'roles.editor.price.input'"),
        ("conversation:\n  window: 2\n", "unknown key 'conversation.window'"),
        ("roles:\n  jduge:\n    model: x\n", "roles.jduge"),
        ("max_rounds: 0\n", "max_rounds: Input should be greater than or equal to 1"),
        ("mode: fast\n", "mode: Input should be 'full', 'debate', 'advise', 'advise-noresp' or 'edit'"),
        ("judge: scores\n", "judge: Input should be 'verdict', 'score' or 'prob'"),
        (
            "roles:\n  judge:\n    temperature: 3\n",
            "roles.judge.temperature: Input should be less than or equal to 2",
        ),
        ("roles:\n  judge:\n    top_p: 0\n", "roles.judge.top_p: Input should be greater than 0"),
        ("roles:\n  judge: strong\n", "roles.judge: Input should be a valid dictionary"),
        (
            "conversation:\n  window_rounds: 0\n",
            "conversation.window_rounds: Input should be greater than or",
        ),
        ("concurrency: many\n", "concurrency: Input should be a valid integer"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_invalid_configs_are_explained(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(text, source="run.yaml")
    assert str(info.value).startswith("run.yaml: ")
    assert message in str(info.value)


def test_an_unknown_role_is_called_an_unknown_key() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml("roles:\n  jduge:\n    model: x\n", source="run.yaml")
    assert str(info.value).splitlines()[1] == (
        "  unknown key 'roles.jduge': Input should be 'positive', 'critical', 'advisor', 'editor', 'judge', "
        "'critic' or 'refiner'"
    )


def test_every_problem_is_listed() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml("modle: x\nmax_rounds: 0\nroles:\n  judge:\n    modle: y\n", source="run.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "run.yaml: invalid configuration"
    assert sorted(lines[1:]) == [
        "  max_rounds: Input should be greater than or equal to 1",
        "  unknown key 'modle'",
        "  unknown key 'roles.judge.modle'",
    ]


def test_load_config_merges_flags_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: file-model\nmax_rounds: 5\nconversation:\n  window_rounds: 4\n  max_turns: 9\n"
        "roles:\n  judge:\n    model: judge-model\n"
    )
    config = load_config(
        path, {"model": "flag-model", "max_rounds": 2, "temperature": None, "conversation": {"max_turns": 1}}
    )
    assert (config.model, config.max_rounds, config.temperature) == ("flag-model", 2, 0.0)
    assert config.conversation == ConversationConfig(window_rounds=4, max_turns=1)  # merged, not replaced
    assert config.role("judge").model == "judge-model"  # a role's own model is more specific than a flag
    assert config.role("editor").model == "flag-model"


def test_load_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()
    bad = tmp_path / "bad.yaml"
    bad.write_text("roles:\n  reviewer:\n    model: x\n")  # critic is the tree strategy's role
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid configuration")
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(None, {"modle": "x"})


def test_config_command_prints_the_effective_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "base_url: http://a:1/v1\nmodel: file-model\nmax_rounds: 5\n"
        "conversation:\n  window_rounds: 4\n"
        "roles:\n  judge:\n    model: judge-model\n    api_key_env: JUDGE_KEY\n"
    )
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-judge-0001")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code = main(
        ["config", "--config", str(path), "--max-rounds", "2", "--max-turns", "3", "--mode", "advise"]
    )
    out = capsys.readouterr().out
    assert code == 0
    printed = Config.from_yaml("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    assert printed == Config(
        base_url="http://a:1/v1",
        model="file-model",
        max_rounds=2,
        mode="advise",
        conversation=ConversationConfig(window_rounds=4, max_turns=3),
        roles={Role.JUDGE: RoleConfig(model="judge-model", api_key_env="JUDGE_KEY")},
    )
    assert out.splitlines()[-2:] == ["# JUDGE_KEY: set (***)", "# OPENAI_API_KEY: not set"]
    assert "sk-secret-judge-0001" not in out


def test_config_command_rejects_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("roles:\n  judge:\n    modle: x\n")
    assert main(["config", "--config", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "unknown key 'roles.judge.modle'" in err
    assert "Traceback" not in err


# -- per-role routing against fake servers -------------------------------------------------------

ROWS = [
    {"instruction": "Name a prime number.", "input": "", "output": "9"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue"},
]


def write_inputs(tmp_path: Path, yaml_text: str) -> tuple[Path, Path, Path]:
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text)
    return src, cfg, tmp_path / "out.jsonl"


def by_role(bodies: list[dict[str, Any]], key: str) -> dict[str, set[Any]]:
    seen: dict[str, set[Any]] = {}
    for body in bodies:
        seen.setdefault(identify_role(body["messages"]), set()).add(body.get(key))
    return seen


async def test_each_role_uses_its_configured_model_and_sampling(tmp_path: Path) -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server:
        src, cfg, out = write_inputs(
            tmp_path,
            f"base_url: {server.base_url}\nmodel: base-model\n"
            "roles:\n"
            "  positive:\n    model: pos-model\n"
            "  judge:\n    model: judge-model\n    temperature: 0.5\n    seed: 11\n"
            "  editor:\n    max_tokens: 64\n    top_p: 0.5\n",
        )
        code, _, err = await coevol_cli("refine", str(src), "-o", str(out), "--config", str(cfg), "-q")
        assert code == 0, err
        bodies = [r.body for r in server.requests]
    assert len(bodies) == 2 * 16
    assert by_role(bodies, "model") == {
        "positive": {"pos-model"},
        "critical": {"base-model"},
        "advisor": {"base-model"},
        "editor": {"base-model"},
        "judge": {"judge-model"},
    }
    assert by_role(bodies, "temperature") == {r: {0.5 if r == "judge" else 0.0} for r in COEVOL_ROLES}
    assert by_role(bodies, "seed") == {r: {11 if r == "judge" else None} for r in COEVOL_ROLES}
    assert by_role(bodies, "max_tokens") == {r: {64 if r == "editor" else 1000} for r in COEVOL_ROLES}
    assert by_role(bodies, "top_p") == {r: {0.5 if r == "editor" else 1.0} for r in COEVOL_ROLES}
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == [
        "9" + EDIT_MARK,
        "Blue" + EDIT_MARK,
    ]


async def test_cli_flags_override_the_file_but_not_a_roles_own_model(tmp_path: Path) -> None:
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(0))) as server:
        src, cfg, out = write_inputs(
            tmp_path,
            "base_url: http://127.0.0.1:9/v1\nmodel: file-model\nmax_tokens: 10\n"
            "roles:\n  judge:\n    model: judge-model\n",
        )
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--config", str(cfg), "-q",
            "--base-url", server.base_url, "--model", "flag-model", "--max-tokens", "20",
        )  # fmt: skip
        assert code == 0, err
        bodies = [r.body for r in server.requests]
    assert len(bodies) == 2 * 8
    assert by_role(bodies, "model") == {
        r: {"judge-model" if r == "judge" else "flag-model"} for r in COEVOL_ROLES
    }
    assert by_role(bodies, "max_tokens") == {r: {20} for r in COEVOL_ROLES}


async def test_a_role_can_have_its_own_endpoint_and_key(tmp_path: Path) -> None:
    responder = CoEvolResponder(accept_up_to(1))
    async with (
        FakeOpenAIServer(responder, api_key="main-key") as main_server,
        FakeOpenAIServer(responder, api_key="judge-key") as judge_server,
    ):
        src, cfg, out = write_inputs(
            tmp_path,
            f"base_url: {main_server.base_url}\nmodel: base-model\napi_key_env: MAIN_KEY\n"
            f"roles:\n  judge:\n    base_url: {judge_server.base_url}\n    api_key_env: JUDGE_KEY\n"
            "    model: judge-model\n",
        )
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--config", str(cfg), "-q",
            env={"MAIN_KEY": "main-key", "JUDGE_KEY": "judge-key"},
        )  # fmt: skip
        assert code == 0, err
        main_roles = [identify_role(r.body["messages"]) for r in main_server.requests]
        judge_roles = [identify_role(r.body["messages"]) for r in judge_server.requests]
        assert all(r.has_auth for r in main_server.requests + judge_server.requests)
        assert {r.body["model"] for r in judge_server.requests} == {"judge-model"}
        assert {r.body["model"] for r in main_server.requests} == {"base-model"}
    assert sorted(set(main_roles)) == ["advisor", "critical", "editor", "positive"]
    assert len(main_roles) == 2 * 2 * 6
    assert judge_roles == ["judge"] * (2 * 2 * 2)
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == [
        "9" + EDIT_MARK,
        "Blue" + EDIT_MARK,
    ]


async def test_a_wrong_key_for_one_role_fails_the_run_clearly(tmp_path: Path) -> None:
    async with (
        FakeOpenAIServer(CoEvolResponder(), api_key="main-key") as main_server,
        FakeOpenAIServer(CoEvolResponder(), api_key="judge-key") as judge_server,
    ):
        src, cfg, out = write_inputs(
            tmp_path,
            f"base_url: {main_server.base_url}\nmodel: m\napi_key_env: MAIN_KEY\n"
            f"roles:\n  judge:\n    base_url: {judge_server.base_url}\n    api_key_env: JUDGE_KEY\n",
        )
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--config", str(cfg), "-q",
            env={"MAIN_KEY": "main-key", "JUDGE_KEY": "not-the-judge-key"},
        )  # fmt: skip
    assert code == 1
    assert "AuthenticationError" in err
    assert "not-the-judge-key" not in err
    assert not out.exists()


def test_the_tree_strategy_from_flags_and_file(tmp_path: Path) -> None:
    config = load_config(None, {"strategy": "tree", "tree": {"algorithm": "dfs", "votes": 3}})
    tree = config.loop_settings().tree
    assert tree is not None and (tree.algorithm, tree.votes, tree.branch, tree.keep, tree.depth) == (
        "dfs",
        3,
        3,
        2,
        3,
    )
    assert config.active_roles() == ("critic", "refiner")
    ctree = load_config(None, {"strategy": "tree", "tree": {"expand": "coevol", "value": "pairwise"}})
    assert ctree.active_roles() == ("positive", "critical", "advisor", "editor", "judge")
    assert load_config(None, {"strategy": "tree", "tree": {"value": "pairwise"}}).active_roles() == (
        "judge",
        "critic",
        "refiner",
    )
    assert config.role("critic").temperature == 0.7 and config.role("judge").temperature == 0.0
    assert Config().loop_settings().tree is None and "critic" not in Config().active_roles()
    for text, message in [
        ("strategy: tree\nmode: edit\n", "--mode ablations are for strategy coevol"),
        ("strategy: tree\ntree:\n  branch: 0\n", "tree.branch"),
        ("strategy: tree\ntree:\n  end_gate: 1.0\n", "tree.end_gate"),
        ("strategy: tree\ntree:\n  algorithm: astar\n", "tree.algorithm"),
        ("tree:\n  brnach: 2\n", "unknown key 'tree.brnach'"),
        ("tree:\n  depth: 2\n", "tree settings (--tree-*, tree:) apply only with --strategy tree"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Config.from_yaml(text)
