"""Never lose or clobber a file: refusals before any request, planted links, one run per output,
a crash between the final renames, a full disk, a corrupted store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.api import arefine_file
from coevol.config import Config
from coevol.engine.runner import RunPaths
from coevol.errors import ConfigError, NoSpace, OutputError, StoreError
from coevol.io.writers import RowWriter
from coevol.testing import FakeOpenAIServer
from coevol.testing.responders import CoEvolResponder, accept_up_to

from .engine_support import ThreadedServer, alpaca_rows, run_cli, start_cli, write_jsonl

ROWS = alpaca_rows(4, seed=3)


def config(server: FakeOpenAIServer | ThreadedServer, **overrides: Any) -> Config:
    return Config(base_url=server.base_url, model="m", **overrides)


def cli_args(server: ThreadedServer) -> list[str]:
    return ["--base-url", server.base_url, "--model", "m", "-q"]


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(responder=CoEvolResponder(accept_up_to(1))) as s:
        yield s


# refusals --------------------------------------------------------------------------------------
def _same_path(tmp: Path, data: Path) -> dict[str, Any]:
    return {"output": data}


def _symlinked_output(tmp: Path, data: Path) -> dict[str, Any]:
    (tmp / "alias.jsonl").symlink_to(data)
    return {"output": tmp / "alias.jsonl"}


def _hardlinked_output(tmp: Path, data: Path) -> dict[str, Any]:
    os.link(data, tmp / "hard.jsonl")
    return {"output": tmp / "hard.jsonl"}


def _dotted_output(tmp: Path, data: Path) -> dict[str, Any]:
    return {"output": tmp / "." / "sub" / ".." / data.name}


def _pairs_is_output(tmp: Path, data: Path) -> dict[str, Any]:
    return {"output": tmp / "out.jsonl", "pairs": tmp / "out.jsonl"}


def _pairs_is_input(tmp: Path, data: Path) -> dict[str, Any]:
    return {"output": tmp / "out.jsonl", "pairs": data}


def _output_is_a_folder(tmp: Path, data: Path) -> dict[str, Any]:
    (tmp / "folder.jsonl").mkdir()
    return {"output": tmp / "folder.jsonl"}


def _missing_folder(tmp: Path, data: Path) -> dict[str, Any]:
    return {"output": tmp / "nowhere" / "out.jsonl"}


def _trace_is_input(tmp: Path, data: Path) -> dict[str, Any]:
    traced = tmp / "x.jsonl.trace.jsonl"
    shutil.copy(data, traced)
    return {"input": traced, "output": tmp / "x.jsonl"}


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (_same_path, "the output .* is the input file"),
        (_symlinked_output, "the output .* is the input file"),
        (_hardlinked_output, "the output .* is the input file"),
        (_dotted_output, "the output .* is the input file"),
        (_pairs_is_output, "--pairs .* is the output"),
        (_pairs_is_input, "--pairs .* is the input file"),
        (_output_is_a_folder, "is a folder"),
        (_missing_folder, "the output folder .* does not exist"),
        (_trace_is_input, "the trace .* is the input file"),
    ],
)
async def test_refused_before_any_request(tmp_path: Path, arrange: Any, message: str) -> None:
    (tmp_path / "sub").mkdir()
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    kwargs = arrange(tmp_path, data)
    source = kwargs.pop("input", data)
    before = source.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match=message):
            await arefine_file(source, kwargs.pop("output"), config(fake), **kwargs)
        assert fake.requests == []
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing created either


def test_refusal_is_one_line_and_exit_1(server: ThreadedServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    before, sent = data.read_bytes(), server.count()
    done = run_cli("refine", data, "-o", data, *cli_args(server))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: refusing to run: the output")
    assert "resume" not in done.stderr
    assert server.count() == sent and data.read_bytes() == before


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                       capture_output=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {exc}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=20)


async def test_a_folder_that_is_not_writable_is_refused(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    locked = tmp_path / "ro"
    if os.geteuid() == 0:  # root ignores permission bits: use a read-only file system instead
        _mount_tmpfs(locked, "ro,size=64k")
    else:
        locked.mkdir()
        locked.chmod(0o555)
    try:
        async with FakeOpenAIServer(CoEvolResponder()) as fake:
            with pytest.raises(OutputError, match=r"the output folder .* is not writable"):
                await arefine_file(data, locked / "out.jsonl", config(fake))
            assert fake.requests == []
    finally:
        if os.geteuid() == 0:
            _umount(locked)
        else:
            locked.chmod(0o755)


# planted links ---------------------------------------------------------------------------------
WRITTEN_THROUGH_NAMES = [
    "out.jsonl.partial",
    "out.jsonl.trace.jsonl.partial",
    "out.jsonl.rejects.jsonl.partial",
    "out.jsonl.dataset_info.json.partial",
    "out.jsonl.commit.json.partial",
    "pairs.jsonl.partial",
    "out.jsonl",
    "out.jsonl.trace.jsonl",
    "out.jsonl.rejects.jsonl",
    "out.jsonl.dataset_info.json",
    "pairs.jsonl",
]
REFUSED_NAMES = [
    "out.jsonl.coevol.db",
    "out.jsonl.coevol.db-wal",
    "out.jsonl.coevol.db-shm",
    "out.jsonl.coevol.db-journal",
    "out.jsonl.lock",
    "out.jsonl.commit.json",
]


@pytest.mark.parametrize("name", WRITTEN_THROUGH_NAMES)
async def test_a_planted_link_at_a_working_name_never_redirects_a_write(tmp_path: Path, name: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", [*ROWS, "not json"])  # a bad row, so rejects are written
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / name).symlink_to(victim)
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        run = await arefine_file(data, tmp_path / "out.jsonl", config(fake), pairs=tmp_path / "pairs.jsonl")
    assert run.summary.complete
    assert victim.read_text() == "precious"
    assert not (tmp_path / name).is_symlink()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(ROWS)


@pytest.mark.parametrize("name", REFUSED_NAMES)
async def test_a_planted_link_at_the_store_lock_or_journal_is_refused(tmp_path: Path, name: str) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / name).symlink_to(victim)
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(OutputError, match="symbolic link"):
            await arefine_file(data, tmp_path / "out.jsonl", config(fake))
        assert fake.requests == []
    assert victim.read_text() == "precious"


# one run per output ----------------------------------------------------------------------------
def test_a_second_run_on_the_same_output_is_refused_and_kill_9_leaves_no_stale_lock(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(40, seed=4))
    out = tmp_path / "out.jsonl"
    with ThreadedServer(responder=CoEvolResponder(), latency=0.05) as slow:
        first = start_cli("refine", data, "-o", out, *cli_args(slow), "--concurrency", "4")
        try:
            slow.wait_for(lambda: slow.count() > 0)
            sent = slow.count()
            second = run_cli("refine", data, "-o", out, *cli_args(slow))
            assert second.returncode == 1, second.stderr
            assert "another coevol run is already writing this output" in second.stderr
            assert f"pid {first.pid}: coevol refine" in second.stderr
            assert "Traceback" not in second.stderr
            assert first.poll() is None  # the first run goes on
            assert slow.count() >= sent
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        third = run_cli("refine", data, "-o", out, *cli_args(slow), "--concurrency", "16", timeout=120)
        assert third.returncode == 0, third.stderr
    assert len(out.read_text().splitlines()) == 40


# a crash between the final renames -------------------------------------------------------------
class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def _consistent(paths: RunPaths) -> list[str]:
    """The refined outputs as the output and the trace each tell them (they must agree)."""
    outputs = [orjson.loads(line)["output"] for line in paths.output.read_bytes().splitlines()]
    finals = [orjson.loads(line)["turns"][-1]["final"] for line in paths.trace.read_bytes().splitlines()]
    assert outputs == finals, "the output and the trace are from different runs"
    return outputs


async def test_a_crash_between_the_renames_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS[:2])
    out = tmp_path / "out.jsonl"
    paths = RunPaths.beside(data, out)
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        await arefine_file(data, out, config(fake))
        assert len(_consistent(paths)) == 2
        write_jsonl(data, ROWS)  # the input grows: the next set differs from this one

        real = os.replace
        renamed: list[str] = []

        def dies_after_the_journal_and_the_output(src: Any, dst: Any) -> None:
            real(src, dst)
            renamed.append(Path(dst).name)
            if renamed[-1] == "out.jsonl":
                raise Crash

        monkeypatch.setattr("coevol.io.writers.os.replace", dies_after_the_journal_and_the_output)
        with pytest.raises(Crash):
            await arefine_file(data, out, config(fake))
        monkeypatch.setattr("coevol.io.writers.os.replace", real)
        assert renamed == ["out.jsonl.commit.json", "out.jsonl"]
        with pytest.raises(AssertionError, match="different runs"):
            _consistent(paths)  # the mixed set the crash left
        assert paths.journal.exists()

        sent = len(fake.requests)
        run = await arefine_file(data, out, config(fake))
        assert run.recovered and len(fake.requests) == sent
    assert len(_consistent(paths)) == len(ROWS)
    assert not paths.journal.exists() and not list(tmp_path.glob("*.partial"))


# a full disk -----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "small"
    _mount_tmpfs(folder, "size=1m")
    try:
        yield folder
    finally:
        _umount(folder)


def test_a_full_disk_ends_with_one_line_and_keeps_the_previous_output(
    server: ThreadedServer, tmp_path: Path, small_disk: Path
) -> None:
    out = small_disk / "out.jsonl"
    small = write_jsonl(tmp_path / "small.jsonl", ROWS[:2])
    first = run_cli("refine", small, "-o", out, *cli_args(server))
    assert first.returncode == 0, first.stderr
    previous = out.read_bytes()

    big = [{**row, "output": row["output"] + " filler" * 400} for row in alpaca_rows(200, seed=8)]
    done = run_cli("refine", write_jsonl(tmp_path / "big.jsonl", big), "-o", out, *cli_args(server))
    assert done.returncode == 1, done.stderr
    assert "no space left on device" in done.stderr or "disk is full" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert out.read_bytes() == previous


# a corrupted store -----------------------------------------------------------------------------
def _garbage(store: Path) -> None:
    store.write_bytes(os.urandom(8192))


def _truncated(store: Path) -> None:
    content = store.read_bytes()
    store.write_bytes(content[: len(content) // 3])


def _not_sqlite(store: Path) -> None:
    store.write_text('{"this": "is a JSON file"}\n')


def _header_only(store: Path) -> None:
    store.write_bytes(store.read_bytes()[:100])


@pytest.mark.parametrize("damage", [_garbage, _truncated, _not_sqlite, _header_only])
async def test_a_corrupted_store_is_one_clear_error_naming_it(tmp_path: Path, damage: Any) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(30, seed=1))
    out = tmp_path / "out.jsonl"
    async with FakeOpenAIServer(CoEvolResponder(accept_up_to(1))) as fake:
        await arefine_file(data, out, config(fake))
        previous = out.read_bytes()
        damage(RunPaths.beside(data, out).store)
        with pytest.raises(StoreError, match=r"out\.jsonl\.coevol\.db .*Move it aside"):
            await arefine_file(data, out, config(fake))
    assert out.read_bytes() == previous


def test_a_corrupted_store_through_the_cli(server: ThreadedServer, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    _garbage(RunPaths.beside(data, out).store)
    sent = server.count()
    done = run_cli("refine", data, "-o", out, *cli_args(server))
    assert done.returncode == 1
    assert "out.jsonl.coevol.db is not a usable coevol store" in done.stderr
    assert "Traceback" not in done.stderr and "resume" not in done.stderr
    assert server.count() == sent


def test_a_full_disk_while_writing_an_output_file_is_one_clear_error(small_disk: Path) -> None:
    out = small_disk / "out.jsonl"
    out.write_text("previous\n")
    writer = RowWriter(out)
    with pytest.raises(NoSpace, match=r"cannot write .*out\.jsonl\.partial: no space left on device"):
        for i in range(2000):
            writer.write({"i": i, "text": "x" * 1000})
        writer.finish()
    writer.abort()
    assert out.read_text() == "previous\n"


async def test_an_output_coevol_cannot_write_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    async with FakeOpenAIServer(CoEvolResponder()) as fake:
        with pytest.raises(ConfigError, match=r"output must be \.jsonl, \.json or \.parquet"):
            await arefine_file(data, tmp_path / "out.csv", config(fake))
        with pytest.raises(ConfigError, match=r"output must be \.jsonl, \.json or \.parquet"):
            await arefine_file(data, tmp_path / "o.jsonl", config(fake), pairs=tmp_path / "p.txt")
        assert fake.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
