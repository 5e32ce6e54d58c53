"""The command line's boundary: one ``error:`` line per failure, no traceback, nothing leaked or obeyed."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from coevol.cli import main as cli_main
from coevol.cli.console import describe_os_error, describe_unexpected, error_text
from coevol.cli.progress import STALL_AFTER, RunDisplay, describe_waits, summary_table
from coevol.engine.dispatch import RunStats, Wait
from coevol.engine.runner import RunSummary
from coevol.testing import HOSTILE_TEXT, FakeOpenAIServer, Fault, FaultKind, always, mentioning

from .conftest import ALPACA_ROWS, coevol_cli

QSECRET = "qs-SECRET-5e4d3c2b1a"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- configuration failures ----------------------------------------------------------------------


def test_a_yaml_syntax_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: a\nroles: [unclosed\n", encoding="utf-8")
    code, out, err = run_main(capsys, "config", "--config", str(cfg))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {cfg}: not valid YAML (line ")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_hostile_yaml_nesting_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("a: " + "[" * 20000 + "]" * 20000 + "\n", encoding="utf-8")
    code, _, err = run_main(capsys, "config", "--config", str(cfg))
    assert code == 1 and err.startswith("error: ") and "Traceback" not in err


def test_a_config_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(b"model: caf\xe9\n")
    code, _, err = run_main(capsys, "config", "--config", str(cfg))
    assert (code, err) == (1, f"error: {cfg}: not UTF-8 text\n")


def test_config_prints_url_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:9/v1?api-version=1&api_key={QSECRET}"
    code, out, err = run_main(capsys, "config", "--base-url", url)
    assert code == 0, err
    assert "base_url: http://127.0.0.1:9/v1?api-version=1&api_key=***" in out
    assert QSECRET not in out + err


def test_config_refuses_userinfo_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "config", "--base-url", f"http://me:{QSECRET}@127.0.0.1:9/v1")
    assert code == 1 and out == ""
    assert "must not carry a user name or password" in err
    assert QSECRET not in err


def test_config_output_is_inert(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "config", "--model", "evil\x1b]0;title\x07\u202e")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil\\e]0;title" in out


@pytest.mark.parametrize("value", ["sk-abc123", "MY KEY", "K\x1b[2J", ""])
def test_api_key_env_must_be_a_variable_name(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, out, err = run_main(capsys, "config", "--api-key-env", value)
    assert (code, out) == (1, "")
    assert "api_key_env must be the NAME of an environment variable" in err
    assert value == "" or value not in err


def test_max_budget_without_a_price_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "config", "--base-url", "http://127.0.0.1:9/v1", "--max-budget", "5")
    assert code == 1
    assert "--max-budget needs prices" in err and "--price-prompt" in err


def test_prices_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        capsys, "config", "--max-budget", "5", "--price-prompt", "0.15", "--price-completion", "0.6"
    )
    assert code == 0, err
    assert "price:\n  prompt: 0.15\n  completion: 0.6\n" in out
    assert "max_budget: 5.0" in out


async def test_max_budget_without_a_price_sends_nothing(tmp_path: Path) -> None:
    src = tmp_path / "data.json"
    src.write_text(json.dumps(ALPACA_ROWS), encoding="utf-8")
    async with FakeOpenAIServer() as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(tmp_path / "out.json"), "--base-url", server.base_url,
            "--max-budget", "1", "-q",
        )  # fmt: skip
        assert server.requests == []
    assert code == 1 and "needs prices" in err


# --- OS, sqlite and unexpected errors at the boundary ---------------------------------------------


def test_os_errors_become_one_line_with_advice() -> None:
    full = OSError(28, "No space left on device", "/data/out.json.partial")
    assert describe_os_error(full) == (
        "No space left on device: /data/out.json.partial (free some space, then rerun the same "
        "command to resume)"
    )
    assert describe_os_error(PermissionError(13, "Permission denied", "/ro/x")) == (
        "Permission denied: /ro/x (check the folder's permissions, or choose another output folder)"
    )


@pytest.mark.parametrize(
    ("exc", "start"),
    [
        (OSError(30, "Read-only file system", "/ro/out.json"), "error: Read-only file system: /ro/out.json"),
        (sqlite3.DatabaseError("file is not a database"), "error: the run store could not be used"),
        (RecursionError("maximum recursion depth exceeded"), "error: data nested too deeply"),
        (KeyError("boom"), "error: internal error, please report it: KeyError: 'boom'"),
    ],
)
def test_the_boundary_translates_every_error_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], exc: BaseException, start: str
) -> None:
    def explode(ns: Any, err: Any) -> int:
        raise exc

    monkeypatch.setattr(cli_main, "_run", explode)
    monkeypatch.delenv("COEVOL_DEBUG", raising=False)
    code, out, err = run_main(capsys, "config")
    assert code == 1 and out == ""
    assert err.startswith(start)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_coevol_debug_shows_the_traceback_of_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(ns: Any, err: Any) -> int:
        raise ZeroDivisionError("bug \x1b]0;title\x07")

    monkeypatch.setattr(cli_main, "_run", explode)
    monkeypatch.setenv("COEVOL_DEBUG", "1")
    code, _, err = run_main(capsys, "config")
    assert code == 1
    assert err.startswith("error: internal error, please report it: ZeroDivisionError: bug \\e]0;title\\x07")
    assert "Traceback (most recent call last)" in err and "\x1b" not in err


def test_describe_unexpected_names_the_debug_switch() -> None:
    assert describe_unexpected(ValueError("x")) == (
        "internal error, please report it: ValueError: x (set COEVOL_DEBUG=1 to see the traceback)"
    )


# --- nothing from data or a server drives the terminal -------------------------------------------


def render(renderable: Any, *, tty: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=tty, width=300, color_system="standard" if tty else None)
    console.print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])
def test_a_hostile_error_message_is_printed_inert(tty: bool) -> None:
    shown = render(error_text(f"HTTP 400 from http://x/v1: {HOSTILE_TEXT}"), tty=tty)
    assert "[/b]" in shown and "[bold red]markup[/]" in shown
    assert "\\e]0;pwn\\x07" in shown and "\x07" not in shown and "\x1b]" not in shown
    assert "\r" not in shown and "\x08" not in shown


def test_an_install_hint_keeps_its_extra() -> None:
    assert "pip install 'coevol[parquet]'" in render(error_text("pip install 'coevol[parquet]'"), tty=False)


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "tty"])
def test_the_summary_shows_hostile_causes_inert(tty: bool, tmp_path: Path) -> None:
    summary = RunSummary(rows=1, failed=1)
    summary.failure_causes["bad [/b] \x1b[2J"] += 1
    summary.stopped = "server said [/b] \x1b]0;x\x07"
    stats = RunStats()
    shown = render(summary_table(summary, stats), tty=tty)
    assert "bad [/b] \\e[2J: 1" in shown and "\x1b[2J" not in shown
    from coevol.engine.runner import RunPaths

    paths = RunPaths.beside(tmp_path / "in[/b].json", tmp_path / "out[/b]" / "o.json")
    buf = io.StringIO()
    display = RunDisplay(Console(file=buf, force_terminal=tty, width=300), total=1, quiet=True)
    display.summary(summary, stats, paths)
    text = buf.getvalue()
    assert "server said [/b] \\e]0;x\\x07" in text and "\x07" not in text


async def test_a_run_to_an_output_path_with_markup_succeeds(tmp_path: Path) -> None:
    """An output path reading ``out[/b]x`` is a path like any other (rich must not parse it)."""
    out_dir = tmp_path / "out[" / "b]x[bold]"
    out_dir.mkdir(parents=True)
    assert "out[/b]x" in str(out_dir)
    src = tmp_path / "data.json"
    src.write_text(json.dumps(ALPACA_ROWS[:1]), encoding="utf-8")
    async with FakeOpenAIServer() as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out_dir / "o[parquet].json"), "--base-url", server.base_url,
            "--max-rounds", "1",
        )  # fmt: skip
    assert "MarkupError" not in err and "Traceback" not in err, err
    assert code in (0, 4), err
    assert f"output: {out_dir / 'o[parquet].json'}" in err


# --- what waits, and until when -------------------------------------------------------------------


def hms(t: float) -> str:
    return f"T{t:.0f}"


def test_describe_waits_names_pauses_backoffs_and_stalls() -> None:
    stats = RunStats()
    assert describe_waits(stats, 1000.0, 50.0, clock=hms) == ""
    stats.pauses["http://j/v1"] = Wait("judge", "429", 1090.0, server_wide=True)
    stats.waits[1] = Wait("editor", "429", 1005.0)
    stats.waits[2] = Wait("editor", "HTTP 503", 1012.0)
    stats.waits[3] = Wait("judge", "429", 999.0)  # already over: not shown
    stats.sending[4] = ("advisor", 50.0 - STALL_AFTER - 5)
    stats.sending[5] = ("positive", 49.0)
    assert describe_waits(stats, 1000.0, 50.0, clock=hms) == (
        "waiting: judge server paused by 429 until T1090; 2 requests backing off (editor 429, "
        "editor HTTP 503) until T1012; 1 request without an answer for 35s+ (longest: advisor)"
    )


def test_the_progress_line_shows_a_paused_server(tmp_path: Path) -> None:
    buf = io.StringIO()
    display = RunDisplay(Console(file=buf, width=300), total=3, quiet=True)
    stats = RunStats(rate_limited=1)
    stats.pauses["http://j/v1"] = Wait("judge", "429", time.time() + 60, server_wide=True)
    display.update(RunSummary(), stats, force=True)
    assert display._waits.plain.startswith("  waiting: judge server paused by 429 until ")
    assert "(1 answered 429)" in display._detail.plain


# --- sessions are closed on every exit path ------------------------------------------------------


@pytest.mark.parametrize("case", ["refused key", "missing /v1", "wrong model"])
async def test_no_unclosed_session_warning_after_an_error(tmp_path: Path, case: str) -> None:
    src = tmp_path / "data.json"
    src.write_text(json.dumps(ALPACA_ROWS), encoding="utf-8")
    out = tmp_path / "out.json"
    env = {"PYTHONWARNINGS": "always", "COEVOL_T_KEY": "wrong"}
    missing = Fault(FaultKind.HOSTILE_ERROR, status=404, message="The model `not-served` does not exist.")
    faults = always(missing) if case == "wrong model" else None
    async with FakeOpenAIServer(api_key="right", model="served", faults=faults) as server:
        base = {"missing /v1": server.base_url.removesuffix("/v1")}.get(case, server.base_url)
        model = "not-served" if case == "wrong model" else "served"
        if case == "wrong model":
            env["COEVOL_T_KEY"] = "right"
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", base, "--model", model,
            "--api-key-env", "COEVOL_T_KEY", "-q",
            env=env,
        )  # fmt: skip
    assert code == 1, err
    assert "Unclosed" not in err and "Traceback" not in err, err
    advice = {
        "refused key": "the key came from $COEVOL_T_KEY",
        "missing /v1": "is missing /v1: the server answers at",
        "wrong model": "model 'not-served' is not served there; the server offers: 'served'",
    }[case]
    assert advice in err


async def test_a_server_ignoring_max_tokens_fails_that_sample_and_writes_nothing_huge(tmp_path: Path) -> None:
    src = tmp_path / "data.json"
    rows = [*ALPACA_ROWS, {"instruction": "HUGEROW: say hi", "input": "", "output": "hi"}]
    src.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "out.json"
    huge = mentioning("HUGEROW", Fault(FaultKind.HUGE, size=10_000_000))
    async with FakeOpenAIServer(faults=huge) as server:
        code, _, err = await coevol_cli(
            "refine", str(src), "-o", str(out), "--base-url", server.base_url, "--model", "fake-model",
            "--max-rounds", "1", "--max-answer-bytes", "1000000", "-q",
        )  # fmt: skip
    assert code == 4, err  # the run completed; one sample failed
    assert "ResponseTooLarge" in err
    written = [p for p in tmp_path.iterdir() if p.name.startswith("out.json")]
    assert written and all(p.stat().st_size < 1_000_000 for p in written)
    assert [r["instruction"] for r in json.loads(out.read_text())][-1] == "HUGEROW: say hi"
