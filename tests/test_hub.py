"""The Hugging Face Hub spelling (pure) and the push of a refined split against a local fake Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coevol.audit import judge_finding
from coevol.errors import ConfigError
from coevol.io.hub import HubSpec, parse_hub
from coevol.report.card import dataset_card
from coevol.testing import FakeOpenAIServer
from coevol.testing.hub import FakeHub
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS, coevol_cli


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("hf://datasets/owner/name", HubSpec("owner/name")),
        ("hf://datasets/owner/name:test", HubSpec("owner/name", None, "test")),
        ("hf://datasets/owner/name@v1.0:validation", HubSpec("owner/name", "v1.0", "validation")),
        ("hf://datasets/owner/name@refs/pr/3", HubSpec("owner/name", "refs/pr/3")),
        ("hf://owner/name:train", HubSpec("owner/name")),  # 0.2's spelling
        (Path("hf://datasets/owner/my_data-2"), HubSpec("owner/my_data-2")),  # a Path folds // into /
        ("data.jsonl", None),
        ("./hf/owner/name", None),
    ],
)
def test_hub_names(text: str | Path, spec: HubSpec | None) -> None:
    assert parse_hub(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "hf://datasets/owner",
        "hf://datasets/owner/name/extra",
        "hf://datasets/../name",
        "hf://datasets/owner/..",
        "hf://datasets/owner/name@../../etc",
        "hf://datasets/owner/name:sp lit",
        "hf://datasets/owner/na\x1bme",
    ],
)
def test_malformed_hub_names_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hub(text)


def test_a_spec_prints_as_it_is_written() -> None:
    assert str(HubSpec("owner/name", "v1", "test")) == "hf://datasets/owner/name@v1:test"
    assert str(HubSpec("owner/name")) == "hf://datasets/owner/name:train"


REPORT: dict[str, Any] = {
    "schema": "coevol.report/1",
    "rows": 4,
    "status": {"refined": 2, "kept": 1, "failed": 0, "rejected": 1},
    "rounds": {"0": 1, "1": 1, "2": 1, "3": 0},
    "length": {
        "tokenizer": "cl100k_base",
        "original_mean": 10.0,
        "final_mean": 12.5,
        "original_median": 9.0,
        "final_median": 11.0,
    },
    "judge": {
        "comparisons": 12,
        "consistent": 2,
        "primacy": 0,
        "recency": 10,
        "position_consistency": 2 / 12,
        "preference_fairness": 1.0,
        "ties": 0,
        "unparseable": 0,
        "accepted": 3,
        "accepted_longer": 2 / 3,
    },
    "models": {"judge": ["gpt-4o-mini"], "editor": ["qwen|7b <b>`x`</b>"]},
}


def test_the_dataset_card_golden() -> None:
    card = dataset_card(
        REPORT,
        title="owner/refined",
        source="data/sft.jsonl",
        data_path="data/train-00000-of-00001.jsonl",
        split="train",
        settings={"mode": "full", "max_rounds": 3, "judge": "verdict"},
    )
    assert card == (
        "---\n"
        "pretty_name: owner/refined\n"
        "tags:\n- coevol\n- sft\n- synthetic\n"
        "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-00000-of-00001.jsonl\n"
        "---\n"
        "\n"
        "# owner/refined\n"
        "\n"
        "The responses were refined with coevol, an implementation of CoEvol (Li et al., EMNLP 2024): for every "
        "response two debaters argue about it, an advisor turns the debate into at most three suggestions, an "
        "editor rewrites the response, and a judge compares the old and the new response in both orders. An "
        "edit is kept only when it wins, and the loop repeats up to the configured number of rounds. A response "
        "the judge did not prefer stays as it was.\n"
        "\n"
        "## How it was made\n"
        "\n"
        "- Source: `data/sft.jsonl`, 4 rows; the `train` split is `data/train-00000-of-00001.jsonl`, in the "
        "source's format and with its fields.\n"
        "\n"
        "| role | model |\n| --- | --- |\n"
        "| editor | qwen/7b ‹b›'x'‹/b› |\n"
        "| judge | gpt-4o-mini |\n"
        "\n"
        "| setting | value |\n| --- | --- |\n| mode | full |\n| max_rounds | 3 |\n| judge | verdict |\n"
        "\n"
        "## Results\n"
        "\n"
        "| rows | count | share |\n| --- | ---: | ---: |\n"
        "| refined (at least one accepted edit) | 2 | 50.0% |\n"
        "| kept as they were | 1 | 25.0% |\n"
        "| failed (written unchanged) | 0 | 0.0% |\n"
        "| rejected (not refined) | 1 | 25.0% |\n"
        "| all | 4 | |\n"
        "\n"
        "### Rounds of evolution (the paper's Figure 2a)\n"
        "\n"
        "| accepted edits | units | share |\n| ---: | ---: | ---: |\n"
        "| 0 | 1 | 33.3% |\n| 1 | 1 | 33.3% |\n| 2 | 1 | 33.3% |\n| 3 | 0 | 0.0% |\n"
        "\n"
        "### Response length (Figure 2b)\n"
        "\n"
        "Measured in `cl100k_base` tokens.\n"
        "\n"
        "| | mean | median |\n| --- | ---: | ---: |\n| original | 10.0 | 9.0 |\n| refined | 12.5 | 11.0 |\n"
        "\n"
        "### The judge\n"
        "\n"
        "| judge audit | |\n| --- | ---: |\n"
        "| comparisons (both orders) | 12 |\n"
        "| position consistency | 0.17 |\n"
        "| preference fairness (-1 first position, +1 second) | +1.00 |\n"
        "| ties | 0 |\n"
        "| unparseable verdicts | 0 |\n"
        "| accepted edits | 3 |\n"
        "| accepted edits longer than what they replaced | 66.7% |\n"
        "\n"
        f"**Finding:** {judge_finding(REPORT['judge'])}\n"
    )
    assert "http" not in card and "](" not in card  # link-free


def test_a_card_without_lengths_or_judged_edits_says_so() -> None:
    report = {**REPORT, "length": {"tokenizer": "cl100k_base"}, "judge": {"comparisons": 0}}
    card = dataset_card(report, title="o/n", source="s", data_path="d", split="train", settings={})
    assert "Response lengths were not measured (`pip install 'coevol[report]'` measures them)." in card
    assert "No edit reached the judge." in card


async def test_push_to_hub_uploads_the_split_and_its_card(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    out = tmp_path / "out.jsonl"
    async with (
        FakeHub(token="hf_secret_token") as hub,
        FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as server,
    ):
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret_token", "HF_HUB_DISABLE_TELEMETRY": "1"}
        args = ["refine", str(data), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q"]
        code, stdout, err = await coevol_cli(
            *args, "--push-to-hub", "owner/refined", "--hub-private", env=env
        )
        assert code == 0, err
        pushed = hub.files["owner/refined"]
        assert pushed["data/train-00000-of-00001.jsonl"] == out.read_bytes()
        card = pushed["README.md"].decode()
        assert hub.repos == {"owner/refined": {"private": True}}
        assert hub.cards[0]["configs"][0]["data_files"] == [
            {"split": "train", "path": "data/train-00000-of-00001.jsonl"}
        ]
        assert "| refined (at least one accepted edit) | 3 | 100.0% |" in card and "| judge | m |" in card
        assert "pushed to hf://datasets/owner/refined" in err
        assert "hf_secret_token" not in stdout + err + card
        assert {auth for _, _, auth in hub.requests} == {"Bearer hf_secret_token"}

        # A refused token: one line, exit 1, the refined file stays.
        env["HF_TOKEN"] = "hf_wrong"
        code, stdout, err = await coevol_cli(*args, "--push-to-hub", "owner/refined", env=env)
    assert code == 1 and out.exists()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot push to hf://datasets/owner/refined: "), (
        err
    )
    assert "401" in errors[0]
    assert "hf_wrong" not in stdout + err


async def test_a_bad_hub_name_is_refused_before_anything(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(ALPACA_ROWS[0]) + "\n")
    out = tmp_path / "out.jsonl"
    code, _, err = await coevol_cli(
        "refine",
        str(data),
        "-o",
        str(out),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--push-to-hub",
        "owner/../x",
    )
    assert code == 1 and err.startswith("error: not a Hub dataset name: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
