"""The run folder (issue 16): ``--run-dir DIR`` keeps every side file of a run in DIR, the output
(and ``--pairs``) where the user asked; resume, show and report read it; the refusals cover it."""

from __future__ import annotations

import io
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from coevol.api import arefine_file
from coevol.cli.progress import RunDisplay, summary_table
from coevol.config import Config
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import RunPaths, RunSummary
from coevol.errors import OutputError
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .engine_support import ThreadedServer, alpaca_rows, run_cli, start_cli, write_jsonl

ROWS = alpaca_rows(4, seed=7)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(1))) as s:
        yield s


def _args(server: ThreadedServer) -> list[str]:
    return ["--base-url", server.base_url, "--model", "m", "-q"]


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_run_into_a_folder_leaves_only_the_output_and_pairs_and_resumes(
    server: ThreadedServer, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "in.jsonl", [*ROWS, "not json"])
    outs = tmp_path / "outs"
    outs.mkdir()
    out, pairs = outs / "out.jsonl", outs / "pairs.jsonl"
    cmd: list[str | Path] = ["refine", data, "-o", out, "--pairs", pairs, "--run-dir", *_args(server)]
    done = run_cli(*cmd)
    assert done.returncode == 0, done.stderr
    folder = outs / "out.jsonl.coevol"
    assert _listing(outs) == ["out.jsonl", "out.jsonl.coevol", "pairs.jsonl"]
    assert _listing(folder) == [
        "coevol.db",
        "dataset_info.json",
        "lock",
        "pairs.lock",
        "rejects.jsonl",
        "run.json",
        "trace.jsonl",
    ]
    assert orjson.loads((folder / "run.json").read_bytes())["output"] == str(out)
    assert len(out.read_text().splitlines()) == len(ROWS)
    first = out.read_bytes()
    sent = server.count()
    again = run_cli(*cmd)  # resumed from the folder's store: nothing sent again
    assert again.returncode == 0, again.stderr
    assert server.count() == sent
    assert out.read_bytes() == first

    shown = run_cli("show", folder / "trace.jsonl", "--limit", "1")
    assert shown.returncode == 0 and "Task" in shown.stdout, shown.stderr
    report = run_cli("report", folder, "--no-directions")
    assert report.returncode == 0, report.stderr
    assert (folder / "report.html").is_file() and (folder / "report.json").is_file()
    assert _listing(outs) == ["out.jsonl", "out.jsonl.coevol", "pairs.jsonl"]
    document = orjson.loads((folder / "report.json").read_bytes())
    assert document["missing"] == [], document["missing"]
    found = run_cli("report", out, "--no-directions", "-o", tmp_path / "f.html")  # the default folder
    assert found.returncode == 0, found.stderr
    assert orjson.loads((tmp_path / "f.json").read_bytes())["status"] == document["status"]
    named = run_cli("report", out, "--run-dir", folder, "--no-directions", "-o", tmp_path / "r.html")
    assert named.returncode == 0, named.stderr
    assert document["status"] == {"refined": len(ROWS), "kept": 0, "failed": 0, "rejected": 1}
    assert orjson.loads((tmp_path / "r.json").read_bytes())["status"] == document["status"]


async def test_a_named_folder_is_created_and_an_api_run_uses_it(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    folder = tmp_path / "runs" / "first"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        config = Config(base_url=fake.base_url, model="m", run_dir=folder)
        run = await arefine_file(data, tmp_path / "out.jsonl", config)
    assert run.summary.complete and run.paths.trace == folder / "trace.jsonl"
    assert _listing(tmp_path) == ["in.jsonl", "out.jsonl", "runs"]
    assert (folder / "coevol.db").is_file()


def _link(tmp: Path, folder: Path) -> None:
    (tmp / "elsewhere").mkdir()
    folder.symlink_to(tmp / "elsewhere")


def _file(tmp: Path, folder: Path) -> None:
    folder.write_text("a file")


def _planted_store(tmp: Path, folder: Path) -> None:
    folder.mkdir()
    (tmp / "victim.txt").write_text("precious")
    (folder / "coevol.db").symlink_to(tmp / "victim.txt")


def _planted_lock(tmp: Path, folder: Path) -> None:
    folder.mkdir()
    (tmp / "victim.txt").write_text("precious")
    (folder / "lock").symlink_to(tmp / "victim.txt")


def _planted_record(tmp: Path, folder: Path) -> None:
    folder.mkdir()
    (tmp / "victim.txt").write_text("precious")
    (folder / "run.json").symlink_to(tmp / "victim.txt")


def _another_output(tmp: Path, folder: Path) -> None:
    folder.mkdir()
    record = {"schema": "coevol.run/1", "output": str(tmp / "other.jsonl"), "pairs": None}
    (folder / "run.json").write_bytes(orjson.dumps(record))


def _not_ours(tmp: Path, folder: Path) -> None:
    folder.mkdir()
    (folder / "run.json").write_text('{"name": "something else"}')


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (_link, "run folder .* is a symbolic link"),
        (_file, "run folder .* is a file, not a folder"),
        (_planted_store, "symbolic link"),
        (_planted_lock, "symbolic link"),
        (_planted_record, "symbolic link"),
        (_another_output, "it holds the run of .*other.jsonl"),
        (_not_ours, "run.json is not coevol's"),
    ],
)
async def test_a_hostile_run_folder_is_refused_before_any_request(
    tmp_path: Path, arrange: object, message: str
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    folder = tmp_path / "run"
    arrange(tmp_path, folder)  # type: ignore[operator]
    listing = _listing(tmp_path)
    inside = _listing(folder) if folder.is_dir() else None
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match=message):
            await arefine_file(
                data, tmp_path / "out.jsonl", Config(base_url=fake.base_url, model="m", run_dir=folder)
            )
        assert fake.requests == []
    assert _listing(tmp_path) == listing
    assert (_listing(folder) if folder.is_dir() else None) == inside
    if (tmp_path / "victim.txt").exists():
        assert (tmp_path / "victim.txt").read_text() == "precious"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("run/trace.jsonl", "the output .* is the trace in the run folder"),
        ("run", "the output .* is the run folder"),
    ],
)
async def test_an_output_inside_its_own_run_folder_is_refused(
    tmp_path: Path, output: str, message: str
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "run").mkdir()
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match=message):
            await arefine_file(
                data, tmp_path / output, Config(base_url=fake.base_url, model="m", run_dir=tmp_path / "run")
            )
        assert fake.requests == []


async def test_the_input_in_the_run_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    data = write_jsonl(folder / "trace.jsonl", ROWS)
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match=r"the trace .* is the input file"):
            await arefine_file(
                data, tmp_path / "out.jsonl", Config(base_url=fake.base_url, model="m", run_dir=folder)
            )
        assert fake.requests == []


def test_two_runs_with_one_run_folder_are_refused_by_its_lock(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=4))
    folder = tmp_path / "run"
    with ThreadedServer(responder=CoEvolResponder(), latency=0.05) as slow:
        first = start_cli(
            "refine",
            data,
            "-o",
            tmp_path / "a.jsonl",
            "--run-dir",
            folder,
            *_args(slow),
            "--concurrency",
            "2",
        )
        try:
            slow.wait_for(lambda: slow.count() > 0)
            same = run_cli("refine", data, "-o", tmp_path / "a.jsonl", "--run-dir", folder, *_args(slow))
            assert same.returncode == 1 and "another running coevol job" in same.stderr, same.stderr
            assert f"pid {first.pid}: coevol refine" in same.stderr
            other = run_cli("refine", data, "-o", tmp_path / "b.jsonl", "--run-dir", folder, *_args(slow))
            assert other.returncode == 1, other.stderr
            assert "it holds the run of" in other.stderr and "a.jsonl" in other.stderr
            into = run_cli("refine", data, "-o", folder / "trace.jsonl", *_args(slow))
            assert into.returncode == 1 and "another running coevol job" in into.stderr, into.stderr
            assert first.poll() is None
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
    assert not (tmp_path / "b.jsonl").exists()


def test_the_default_folder_and_the_old_layout_refuse_each_other(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=5))
    out = tmp_path / "out.jsonl"
    with ThreadedServer(responder=CoEvolResponder(), latency=0.05) as slow:
        first = start_cli("refine", data, "-o", out, *_args(slow), "--concurrency", "2")  # 0.2's layout
        try:
            slow.wait_for(lambda: slow.count() > 0)
            second = run_cli("refine", data, "-o", out, "--run-dir", *_args(slow))
            assert second.returncode == 1, second.stderr
            assert "another coevol run is already writing this output" in second.stderr
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)


def test_show_points_at_the_partial_trace_of_an_interrupted_run(tmp_path: Path) -> None:
    trace = tmp_path / "out.jsonl.trace.jsonl"
    missing = run_cli("show", trace)
    assert missing.returncode == 1 and "partial" not in missing.stderr, missing.stderr
    (tmp_path / "out.jsonl.trace.jsonl.partial").write_text("")
    shown = run_cli("show", trace)
    assert shown.returncode == 1, shown.stderr
    assert shown.stderr.count("\n") == 1 and "Traceback" not in shown.stderr
    assert "the run was interrupted" in shown.stderr and "out.jsonl.trace.jsonl.partial" in shown.stderr


def _table(summary: RunSummary) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(summary_table(summary, RunStats()))
    return out.getvalue()


def _rows(summary: RunSummary) -> list[str]:
    return [re.sub(r" {2,}", " ", line).strip() for line in _table(summary).splitlines()]


def test_the_summary_says_its_unparseable_count_includes_calls_after_the_stop() -> None:
    summary = RunSummary(judged=43, unparseable=43)
    assert "judge verdicts unparseable 43 of 43" in _rows(summary)
    summary.stopped = "the judge gave no usable verdict in 20 of 20 comparisons (100%, ...)"
    assert "judge verdicts unparseable 43 of 43 (all, with those finished after the stop)" in _rows(summary)


def test_a_stopped_run_in_a_folder_names_its_store_by_path() -> None:
    out = io.StringIO()
    display = RunDisplay(Console(file=out, width=300, color_system=None), total=1, quiet=True)
    paths = RunPaths.of(Path("in.json"), Path("out.json"), None, Path("runs/a"))
    display.summary(RunSummary(stopped="Ctrl-C"), RunStats(), paths)
    assert "Finished work is kept in runs/a/coevol.db: rerun the same command" in out.getvalue()
