"""``coevol compare`` and ``coevol report RESULT`` through the command line (a fake server on a thread)."""

from __future__ import annotations

import argparse
import json
import re
import signal
from pathlib import Path

import pytest

from coevol.cli import report as report_cli
from coevol.cli.main import main
from coevol.judge_check.run import load_pairs
from coevol.testing import ThreadedServer

from .compare_support import (
    BASE_OUTPUTS,
    CAND_OUTPUTS,
    JUDGED_PAIRS,
    alpaca,
    judge_requests,
    plus_judge,
    write_rows,
)


@pytest.fixture
def server() -> ThreadedServer:  # type: ignore[misc]
    with ThreadedServer(responder=plus_judge) as s:
        yield s


def _files(tmp_path: Path, cand_name: str = "cand.jsonl") -> tuple[Path, Path]:
    return (
        write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS)),
        write_rows(tmp_path / cand_name, alpaca(CAND_OUTPUTS)),
    )


def test_compare_prints_the_table_and_writes_the_result(
    tmp_path: Path,
    server: ThreadedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    base, cand = _files(tmp_path, "[bold red]cand\x1b[2J.jsonl")
    out = tmp_path / "r.json"
    code = main(
        ["compare", str(base), str(cand), "-o", str(out), "--base-url", server.base_url, "--model", "m", "-q"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    assert (doc["win"], doc["tie"], doc["loss"]) == (2, 2, 2)
    assert "[bold red]cand\\e[2J.jsonl" in captured.out and "\x1b" not in captured.out
    assert "50.0%" in captured.out  # the win rate (2 + 2/2) / 6
    assert len(judge_requests(server.requests)) == 2 * JUDGED_PAIRS
    # rerun: nothing is sent again
    assert (
        main(
            [
                "compare",
                str(base),
                str(cand),
                "-o",
                str(out),
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "-q",
            ]
        )
        == 0
    )
    assert len(judge_requests(server.requests)) == 2 * JUDGED_PAIRS


def test_dry_run_sends_nothing(
    tmp_path: Path, server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    base, cand = _files(tmp_path)
    code = main(
        [
            "compare",
            str(base),
            str(cand),
            "-o",
            str(tmp_path / "r.json"),
            "--base-url",
            server.base_url,
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "6 pairs, 1 identical (ties, no call); 10 judge calls (up to 30 with re-asks)" in out
    assert server.count() == 0 and not (tmp_path / "r.json").exists()
    assert "--judge-check" not in out


@pytest.mark.parametrize("command", ["compare", "refine"])
def test_a_dry_run_counts_the_judge_check_s_calls(
    tmp_path: Path, server: ThreadedServer, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    base, cand = _files(tmp_path)
    files = [str(base), str(cand)] if command == "compare" else [str(base)]
    out_path = tmp_path / ("r.json" if command == "compare" else "out.jsonl")
    flags = ["--base-url", server.base_url, "--judge-check", "--judge-reasks", "1", "--dry-run"]
    assert main([command, *files, "-o", str(out_path), *flags]) == 0
    pairs = len(load_pairs())
    assert (
        f"--judge-check first: {2 * pairs} judge calls ({pairs} built-in pairs in both orders; + up to "
        f"{2 * pairs} re-asks), not in the figures above" in capsys.readouterr().out
    )
    assert server.count() == 0 and not out_path.exists()


def test_a_mismatch_is_one_error_line_naming_the_row(
    tmp_path: Path, server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(CAND_OUTPUTS, prefix="Other"))
    code = main(
        [
            "compare",
            str(base),
            str(cand),
            "-o",
            str(tmp_path / "r.json"),
            "--base-url",
            server.base_url,
            "--model",
            "m",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "error: row 0 (" in err and "is not the same request: the instruction of turn 1 differs" in err
    assert "Traceback" not in err and server.count() == 0


def test_the_judge_role_of_a_config_is_the_judge(
    tmp_path: Path, server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    base, cand = _files(tmp_path)
    cfg = tmp_path / "roles.yaml"
    cfg.write_text(
        f"base_url: http://127.0.0.1:9/v1\nmodel: small\nroles:\n  judge:\n    base_url: {server.base_url}\n    model: strong\n"
    )
    out = tmp_path / "r.json"
    assert main(["compare", str(base), str(cand), "-o", str(out), "--config", str(cfg), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert doc["judge"]["model"] == "strong"
    assert {r.body["model"] for r in judge_requests(server.requests)} == {"strong"}


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    return report_cli.run(parser.parse_args(["report", *argv]))


def test_report_renders_a_compare_result_with_hostile_rows_inert(
    tmp_path: Path, server: ThreadedServer
) -> None:
    hostile = "</script><img src=x onerror=alert(1)>"
    base = write_rows(tmp_path / "base.jsonl", [{"instruction": hostile, "input": "", "output": "a"}])
    cand = write_rows(tmp_path / "cand.jsonl", [{"instruction": hostile, "input": "", "output": "a+++"}])
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "compare",
                str(base),
                str(cand),
                "-o",
                str(out),
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "-q",
            ]
        )
        == 0
    )
    assert _report([str(out)]) == 0
    page = (tmp_path / "r.json.report.html").read_text()
    assert "coevol compare" in page and "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img" not in page
    with pytest.raises(Exception, match="refusing to write the page over the result"):
        _report([str(out), "-o", str(out)])


def test_failed_pairs_exit_4_and_say_how_to_retry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    from coevol.testing import FaultKind, mentioning

    base, cand = _files(tmp_path)
    with ThreadedServer(responder=plus_judge, faults=mentioning("Task 3:", FaultKind.CONTEXT_LENGTH)) as s:
        code = main(
            ["compare", str(base), str(cand), "-o", str(tmp_path / "r.json"), "--base-url", s.base_url, "-q"]
        )
    err = capsys.readouterr().err
    assert code == 4
    assert "1 pairs failed (left out of the totals); rerun the same command to judge them again" in err


def test_report_refuses_a_broken_compare_result_in_one_line(tmp_path: Path) -> None:
    from coevol.errors import DataError

    bad = tmp_path / "r.json"
    bad.write_text('{"schema": "coevol.compare/1", "candidates": [{"win": "x"}]}')
    with pytest.raises(DataError, match=r"r\.json: not a valid coevol\.compare/1 document \(KeyError"):
        _report([str(bad)])
    bad.write_text('{"schema": "coevol.compare/1", ')
    with pytest.raises(DataError, match="not valid JSON"):
        _report([str(bad)])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_run_resumes_without_resending_a_stored_call(tmp_path: Path, sig: int) -> None:
    from coevol.store.sqlite import Store
    from tests.engine_support import kill_when, start_cli

    n = 20
    base = write_rows(tmp_path / "base.jsonl", alpaca(["a"] * n))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(["a+++"] * n))
    out = tmp_path / "r.json"
    with ThreadedServer(responder=plus_judge, latency=0.05) as s:
        args = [
            "compare",
            str(base),
            str(cand),
            "-o",
            str(out),
            "--base-url",
            s.base_url,
            "--concurrency",
            "2",
            "-q",
        ]
        proc = start_cli(*args)
        assert kill_when(proc, s, 10, sig)
        proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143
        assert not out.exists()
        with Store(tmp_path / "r.json.coevol.db") as store:
            stored = store.count_calls()
        before = len(judge_requests(s.requests))
        assert 0 < stored < 2 * n
        assert main(args) == 0
        assert len(judge_requests(s.requests)) - before == 2 * n - stored
    assert json.loads(out.read_text())["win"] == n


def test_compare_offers_only_the_flags_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    from coevol.cli.main import main

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--judge-reasks" in text and "--base-url" in text and "--rule" in text
    for loop_only in ("--mode", "--max-rounds", "--judge-early-exit", "--window-rounds", "--max-turns"):
        assert re.search(rf"{loop_only}(?![\w-])", text) is None, loop_only
    with pytest.raises(SystemExit) as exc:
        main(["compare", "a.jsonl", "b.jsonl", "-o", "r.json", "--mode", "edit"])
    assert exc.value.code == 2
