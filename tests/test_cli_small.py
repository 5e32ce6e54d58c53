"""Issue 17's small CLI items: ``show --limit 0``, hostile trace files for ``show``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coevol.cli.main import main

from .test_report_support import record, write_trace


def test_show_limit_zero_prints_nothing_and_a_negative_limit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = write_trace(tmp_path / "out.json", [record(0, [("assistant 2", "assistant 1")])])
    assert main(["show", str(trace), "--limit", "1"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["show", str(trace), "--limit", "0"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["show", str(trace), "--limit", "-1"]) == 1
    assert "--limit must be 0 or more, got -1" in capsys.readouterr().err


def test_show_refuses_a_fifo_or_a_device_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "t.trace.jsonl"
    os.mkfifo(fifo)
    assert main(["show", str(fifo)]) == 1
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err
    zero = tmp_path / "z.trace.jsonl"
    zero.symlink_to("/dev/zero")
    assert main(["show", str(zero)]) == 1
    assert "is a device or socket, not a regular file" in capsys.readouterr().err
