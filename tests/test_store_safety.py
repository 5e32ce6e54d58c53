"""Issue 17: hostile run files never hang or exhaust ``report`` or ``refine``: a store whose tables
are views or carry triggers is refused by its schema, and only regular files are read."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

import pytest

from coevol.cli import report as report_cli
from coevol.errors import DataError, StoreError
from coevol.store.sqlite import Store, schema_problem

from .test_report_support import record, write_trace

RECURSIVE = (
    "CREATE VIEW calls(key, role, model, text, prompt_tokens, completion_tokens, finish_reason, created) AS "
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT i, 'r', 'm', 't', 0, 0, NULL, i FROM n"
)


def _report(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    return report_cli.run(parser.parse_args(["report", *argv, "--tokenizer", "words", "--no-directions"]))


def _hostile_store(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(statement)
    db.close()


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (RECURSIVE, "'calls' is a view, not a table"),
        (
            "CREATE TABLE calls(key, role, model, text, prompt_tokens, completion_tokens, finish_reason, created);"
            "CREATE TRIGGER t AFTER INSERT ON calls BEGIN SELECT 1; END",
            "it holds a trigger ('t'), which coevol never creates",
        ),
        ("CREATE TABLE samples(a, b)", "the table 'samples' has the columns a, b"),
    ],
)
def test_a_store_that_is_not_coevols_is_named_never_queried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str, problem: str
) -> None:
    out = tmp_path / "refined.json"
    write_trace(out, [record(0, [("assistant 2", "assistant 1")])])
    store = Path(f"{out}.coevol.db")
    _hostile_store(store, statement)
    with sqlite3.connect(store) as db:
        assert schema_problem(db) == problem
    assert _report(str(out)) == 0  # the report is written, the store named as unreadable
    assert f"not a coevol store: {problem}" in capsys.readouterr().err
    with pytest.raises(StoreError, match="not a usable coevol store"):
        Store(store)


def test_a_real_store_passes_the_schema_check(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db"):
        pass
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert schema_problem(db) is None


def test_a_fifo_or_a_link_to_dev_zero_as_trace_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "refined.json"
    out.write_text("[]")
    trace = Path(f"{out}.trace.jsonl")
    trace.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="the trace is a device or socket, not a regular file"):
        _report(str(out))
    trace.unlink()
    os.mkfifo(trace)
    with pytest.raises(DataError, match=r"the trace is a FIFO \(named pipe\)"):
        _report(str(out))
