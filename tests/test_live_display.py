"""The live display on a real pseudo-terminal (issue 16): it moves as calls finish, before any row
does, and says what waits and until when."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

from coevol.testing import ThreadedServer
from coevol.testing.faults import Fault, FaultKind, first_attempt_faults
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .conftest import ALPACA_ROWS

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Terminal:
    """``coevol ARGS`` on a pseudo-terminal; ``read_until`` collects its screen output as text."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "200", "LINES": "40", "TERM": "xterm-256color"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coevol.cli.main", *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, pattern: str, timeout: float) -> str:
        """Everything shown so far once ``pattern`` (a regex on the text without escapes) appears."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = _ANSI.sub(b"", self.seen).decode(errors="replace")
            if re.search(pattern, text):
                return text
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    break
        text = _ANSI.sub(b"", self.seen).decode(errors="replace")
        raise AssertionError(f"{pattern!r} not shown within {timeout}s; the screen showed:\n{text[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def _input(tmp_path: Path) -> Path:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ALPACA_ROWS))
    return data


def _refine(tmp_path: Path, server: ThreadedServer) -> Terminal:
    """``coevol refine`` of the three sample rows against ``server``, on a pseudo-terminal."""
    out = str(tmp_path / "out.jsonl")
    return Terminal("refine", str(_input(tmp_path)), "-o", out, "--base-url", server.base_url, "--model", "m")


def test_the_display_moves_with_calls_before_any_row_finishes(tmp_path: Path) -> None:
    """Each call takes 1 s and a row needs at least 5 such stages, so no row is done for 5 s: the
    display must already count answered calls and show calls in flight, and an ETA from calls."""
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(3)), latency=1.0) as server:
        term = _refine(tmp_path, server)
        try:
            screen = term.read_until(r"calls [1-9]\d* answered, \d+ in flight", timeout=60)
            assert re.search(r"refining .* 0/3 .* ~eta \d+:\d\d:\d\d", screen), screen[-2000:]
            assert not (tmp_path / "out.jsonl").exists()
        finally:
            term.close()


def test_a_429_with_retry_after_is_shown_waiting_at_once(tmp_path: Path) -> None:
    """Every first request is answered 429 with Retry-After: 20: within seconds the display names
    what waits and until when (0.2 showed nothing until a row finished)."""
    faults = first_attempt_faults([Fault(FaultKind.RATE_LIMIT, retry_after=20.0)], 1.0)
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(3)), faults=faults) as server:
        term = _refine(tmp_path, server)
        try:
            screen = term.read_until(r"waiting: .*429.* until \d\d:\d\d:\d\d", timeout=15)
            assert "0/3" in screen
        finally:
            term.close()


def test_eta_from_rows_then_from_calls() -> None:
    from coevol.cli.progress import eta_seconds

    assert eta_seconds(10.0, rows=2, total=10, calls=40, calls_per_row=16) == 40.0  # 5 s a row
    assert eta_seconds(10.0, rows=0, total=10, calls=20, calls_per_row=16) == 70.0  # 160 calls at 2/s
    assert eta_seconds(10.0, rows=0, total=10, calls=0, calls_per_row=16) is None
    assert eta_seconds(10.0, rows=0, total=None, calls=5, calls_per_row=16) is None


def test_dollars_so_far_and_for_the_run() -> None:
    from coevol.cli.progress import describe_spend, spent
    from coevol.engine.dispatch import RunStats
    from coevol.llm.types import Usage

    stats = RunStats(usage={"judge": Usage(1_000_000, 100_000, 10), "editor": Usage(500_000, 0, 5)})
    prices = {"judge": (0.15, 0.60)}  # only the judge is priced: the editor runs on our own server
    assert spent(stats, prices) == pytest.approx(0.21)
    assert spent(stats, None) is None
    assert describe_spend(stats, prices, rows=3, total=30) == "$0.2100 so far, ~$2.1000 for the run"
    assert describe_spend(stats, prices, rows=0, total=30) == "$0.2100 so far"
    assert describe_spend(stats, None, rows=3, total=30) == ""


def test_ctrl_c_is_acknowledged_before_the_calls_in_flight_end(tmp_path: Path) -> None:
    """Every call takes 120 s: the first Ctrl-C is answered at once with what it waits for, and the
    run stops (exit 130) long before any call could have finished."""
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(3)), latency=120.0) as server:
        term = _refine(tmp_path, server)
        try:
            term.read_until(r"0 answered, [1-9]\d* in flight", timeout=60)
            term.proc.send_signal(signal.SIGINT)
            screen = term.read_until(
                r"stopping: waiting for [1-9]\d* calls? in flight, Ctrl-C again to abandon them", timeout=30
            )
            assert term.proc.wait(timeout=60) == 130, screen
        finally:
            term.close()


def test_a_second_ctrl_c_abandons_the_calls_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """An embedded model's call cannot be cancelled and can take minutes: the second Ctrl-C exits."""
    import asyncio

    from rich.console import Console

    from coevol.cli import run as cli_run
    from coevol.engine.dispatch import RunStats

    class Task:
        cancelled = 0

        def cancel(self) -> None:
            self.cancelled += 1

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    out = io.StringIO()
    live = cli_run._Live(object())
    live.stats = RunStats(sending={1: ("editor", 0.0)})
    task = Task()
    interrupt = cli_run._Interrupt(Console(file=out, width=200), live, cast(asyncio.Task[Any], task))
    interrupt()
    assert task.cancelled == 1 and exits == []
    interrupt()
    assert exits == [130]
    assert out.getvalue().splitlines() == [
        "stopping: waiting for 1 call in flight, Ctrl-C again to abandon them",
        "abandoned 1 call in flight; finished work is kept: rerun the same command to resume",
    ]
