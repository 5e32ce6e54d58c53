"""The one trace reader (``coevol.io.tracefile``): what ``coevol show``, ``coevol report`` and the Ray
merge read. A 0.2 trace reads everywhere; a path that is not a regular file is refused with one line
before a byte is read (issue 17: a FIFO must not hang the reader, ``/dev/zero`` must not fill its
memory); an overlong line is skipped, never held.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.cli.show import read_trace as show_read_trace
from coevol.cli.show import show_trace
from coevol.domain import SCHEMA, TraceRecord
from coevol.errors import CoevolError, DataError, TraceError
from coevol.io import tracefile
from coevol.io.tracefile import Problem, Unreadable, read_trace, trace_lines
from coevol.report.build import ReportOptions, build_report
from coevol.report.reader import RunFiles
from coevol.report.stats import Reservoir

from .conftest import coevol_cli

GOLDEN = Path(__file__).parent / "data" / "trace_v2.jsonl"
LINES = [line for line in GOLDEN.read_bytes().splitlines() if line]


def _trace(tmp_path: Path) -> Path:
    out = tmp_path / "out.jsonl"
    shutil.copy(GOLDEN, f"{out}.trace.jsonl")
    return out


def test_a_0_2_trace_reads_in_the_reader_show_and_the_report(tmp_path: Path) -> None:
    out = _trace(tmp_path)
    trace = Path(f"{out}.trace.jsonl")
    items = list(read_trace(trace))
    assert all(isinstance(i, TraceRecord) for i in items) and len(items) == len(LINES)
    now = f'"schema":"{SCHEMA}"'.encode()
    assert [r.to_json() for r in show_read_trace(trace)] == [
        line.replace(b'"schema":"coevol.trace/2"', now, 1) for line in LINES
    ]
    built = build_report(RunFiles.beside(out), ReportOptions(tokenizer="words", directions=False))
    assert built.document["rows"] == len(LINES) and built.document["source"]["unreadable_lines"] == 0


def _with_timeout(call: Callable[[], Any]) -> BaseException | None:
    """Run ``call`` in a thread; a reader that blocks on a FIFO would leave it running."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the reader blocked on the path"
    return caught[0] if caught else None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero link", "dev-null link"])
def test_a_path_that_is_not_a_regular_file_is_refused_before_reading(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "out.jsonl.trace.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if kind == "dev-zero link" else "/dev/null")
    error = _with_timeout(lambda: list(trace_lines(path)))
    assert isinstance(error, TraceError) and "not a regular file" in str(error)
    assert "\n" not in str(error)
    error = _with_timeout(lambda: list(show_read_trace(path)))
    assert isinstance(error, TraceError)
    error = _with_timeout(
        lambda: build_report(RunFiles.beside(tmp_path / "out.jsonl"), ReportOptions(tokenizer="words"))
    )
    assert isinstance(error, DataError) and "not a regular file" in str(error)


def test_a_link_to_a_regular_trace_still_reads(tmp_path: Path) -> None:
    link = tmp_path / "link.trace.jsonl"
    link.symlink_to(GOLDEN)
    assert sum(1 for _ in trace_lines(link)) == len(LINES)


async def test_show_and_report_refuse_dev_zero_with_one_line(tmp_path: Path) -> None:
    trace = tmp_path / "out.jsonl.trace.jsonl"
    trace.symlink_to("/dev/zero")
    for command in (["show", str(trace)], ["report", str(tmp_path / "out.jsonl")]):
        code, _, err = await coevol_cli(*command)
        assert code == 1 and "not a regular file" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_overlong_line_is_skipped_without_being_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracefile, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(tracefile, "_CHUNK", 1000)
    short = [line for line in LINES if len(line) < 4096][:2]
    path = tmp_path / "t.trace.jsonl"
    path.write_bytes(short[0] + b"\n" + b"x" * 50_000 + b"\n" + short[1] + b"\n")
    assert [(n, line) for n, line in trace_lines(path)] == [(1, short[0]), (2, None), (3, short[1])]
    items = list(read_trace(path))
    assert isinstance(items[1], Unreadable) and items[1].problem is Problem.TOO_LONG
    assert [i.index for i in items if isinstance(i, TraceRecord)] == [
        TraceRecord.from_dict(orjson.loads(line)).index for line in short
    ]
    with pytest.raises(TraceError, match="line 2: longer than"):
        list(show_read_trace(path))


def test_the_report_counts_damaged_lines_and_stops_at_a_foreign_one(tmp_path: Path) -> None:
    out = _trace(tmp_path)
    trace = Path(f"{out}.trace.jsonl")
    trace.write_bytes(trace.read_bytes() + b'{"schema": "coevol.trace/2", "turns": 5}\n{"cut')
    built = build_report(RunFiles.beside(out), ReportOptions(tokenizer="words", directions=False))
    assert built.document["source"]["unreadable_lines"] == 2
    assert built.document["rows"] == len(LINES)
    trace.write_bytes(LINES[0] + b'\n{"schema": "coevol.trace/3x", "turns": []}\n')
    with pytest.raises(DataError, match=r"line 2: this trace has schema 'coevol\.trace/3x'"):
        build_report(RunFiles.beside(out), ReportOptions(tokenizer="words", directions=False))


def test_show_prints_a_0_2_trace(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=100, force_terminal=False)
    assert show_trace(Path(f"{_trace(tmp_path)}.trace.jsonl"), limit=3, console=console) == 3
    assert "accepted edit(s)" in console.export_text()


def test_a_missing_or_folder_trace_is_one_line(tmp_path: Path) -> None:
    for path, message in ((tmp_path / "nope", "no such trace file"), (tmp_path, "is a folder")):
        with pytest.raises(TraceError, match=message) as info:
            list(trace_lines(path))
        assert isinstance(info.value, CoevolError) and "\n" not in str(info.value)


def test_one_reservoir_keeps_a_bounded_uniform_sample() -> None:
    every = Reservoir[int](None)
    some = Reservoir[int](10)
    for i in range(1000):
        every.offer(i)
        some.offer(i)
    assert every.items == list(range(1000)) and every.seen == some.seen == 1000
    assert len(some.items) == 10 and len(set(some.items)) == 10 and max(some.items) >= 10
    again = Reservoir[int](10)
    for i in range(1000):
        again.offer(i)
    assert again.items == some.items  # seed 0: the same page for the same trace


def test_the_ray_merge_reads_shard_traces_through_the_reader(tmp_path: Path) -> None:
    from coevol.engine.runner import RunPaths
    from coevol.executors.shards import merge_shards, plan_shards

    from .engine_support import alpaca_rows, write_jsonl

    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(2))
    work = tmp_path / "work"
    work.mkdir()
    kwargs: dict[str, Any] = {"pairs": None, "input_format": None, "limit": None, "workers": 1}
    plan = plan_shards(data, tmp_path / "o.jsonl", work, offset=0, shard_rows=1, **kwargs)
    for shard, line in zip(plan.shards, LINES[:2], strict=True):
        shard.output.write_bytes(b'{"instruction":"a","input":"","output":"b"}\n')
        shard.paths.trace.write_bytes(line + b"\n\n")  # a blank line is skipped
    paths = RunPaths.beside(data, tmp_path / "o.jsonl")
    merge_shards(plan.shards, paths, parquet_input=None)
    merged = [TraceRecord.from_dict(orjson.loads(line)) for line in paths.trace.read_bytes().splitlines()]
    assert [r.index for r in merged] == [
        TraceRecord.from_dict(orjson.loads(LINES[0])).index,
        TraceRecord.from_dict(orjson.loads(LINES[1])).index + 1,
    ]
    paths.trace.unlink()
    plan.shards[1].paths.trace.unlink()
    plan.shards[1].paths.trace.symlink_to("/dev/zero")
    error = _with_timeout(lambda: merge_shards(plan.shards, paths, parquet_input=None))
    assert isinstance(error, TraceError) and "not a regular file" in str(error)
    assert not paths.trace.exists()
