"""``--executor ray`` and the Ray Data class on a REAL local Ray (started once for the module).

A deterministic responder on a fake server fixes the expected bytes and the exact number of calls a
run needs; the Ray runs must give the same files, survive a killed actor, and after a killed driver
re-send only what was not stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.api import arefine, arefine_file
from coevol.config import load_config
from coevol.errors import ConfigError, MissingExtra
from coevol.store.sqlite import Store
from coevol.testing.responders import CoEvolResponder

from .engine_support import ThreadedServer, alpaca_rows, child_env, kill_when, start_cli, write_jsonl

ray = pytest.importorskip("ray")

from coevol.executors.on_ray import RayOptions, arefine_file_ray  # noqa: E402
from coevol.executors.ray_data import RefineBatches  # noqa: E402

FILES = (
    "out.jsonl",
    "out.jsonl.trace.jsonl",
    "out.jsonl.rejects.jsonl",
    "pairs.jsonl",
    "out.jsonl.dataset_info.json",
)
ROWS = 36


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Any:
    with ThreadedServer(responder=CoEvolResponder(), latency=0.01) as s:
        yield s


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "in.jsonl", [*alpaca_rows(ROWS), "{not json"])


def config(server: ThreadedServer) -> Any:
    return load_config(None, {"base_url": server.base_url, "model": "fake", "concurrency": 8})


@pytest.fixture(scope="module")
def reference(
    server: ThreadedServer, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    folder = tmp_path_factory.mktemp("local")
    start = server.count()
    asyncio.run(arefine_file(data, folder / "out.jsonl", config(server), pairs=folder / "pairs.jsonl"))
    return folder, server.count() - start


def same_files(a: Path, b: Path) -> None:
    """Byte for byte; the trace record by record (the key order of a record's per-role usage follows
    which of two concurrent calls finished first, in a local run as well)."""
    for name in FILES:
        if not (a / name).exists():
            assert not (b / name).exists(), name
            continue
        left, right = (a / name).read_bytes(), (b / name).read_bytes()
        if name.endswith(".trace.jsonl"):
            assert [orjson.loads(x) for x in left.splitlines()] == [
                orjson.loads(x) for x in right.splitlines()
            ]
        else:
            assert left == right, name


def stored_calls(work: Path) -> int:
    total = 0
    for db in work.glob("shard-*.jsonl.coevol.db"):
        with Store(db) as store:
            total += store.count_calls()
    return total


def test_ray_run_gives_the_local_files_byte_for_byte_and_a_rerun_skips_every_shard(
    cluster: Any, server: ThreadedServer, data: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    options = RayOptions(shard_rows=5, workers=2)
    start = server.count()
    run = asyncio.run(
        arefine_file_ray(
            data, tmp_path / "out.jsonl", config(server), pairs=tmp_path / "pairs.jsonl", options=options
        )
    )
    assert server.count() - start == reference[1]  # the same calls, each once
    same_files(reference[0], tmp_path)
    assert run.summary.rows == ROWS + 1 and run.summary.rejected == 1 and run.summary.complete
    assert len(list((tmp_path / "out.jsonl.shards").glob("*.done"))) == 8
    again = server.count()
    rerun = asyncio.run(
        arefine_file_ray(
            data, tmp_path / "out.jsonl", config(server), pairs=tmp_path / "pairs.jsonl", options=options
        )
    )
    assert server.count() == again and rerun.summary.resumed == ROWS + 1
    same_files(reference[0], tmp_path)


def test_a_ray_run_into_a_run_folder_keeps_its_shards_there(
    cluster: Any, server: ThreadedServer, data: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    cfg = config(server).model_copy(update={"run_dir": tmp_path / "run"})
    options = RayOptions(shard_rows=10, workers=2)
    run = asyncio.run(
        arefine_file_ray(data, tmp_path / "out.jsonl", cfg, pairs=tmp_path / "pairs.jsonl", options=options)
    )
    assert run.summary.complete and run.paths.trace == tmp_path / "run" / "trace.jsonl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "pairs.jsonl", "run"]
    assert len(list((tmp_path / "run" / "shards").glob("*.done"))) == 4
    assert (reference[0] / "out.jsonl").read_bytes() == (tmp_path / "out.jsonl").read_bytes()
    assert (tmp_path / "run" / "rejects.jsonl").read_bytes() == (
        reference[0] / "out.jsonl.rejects.jsonl"
    ).read_bytes()


def test_a_killed_actor_has_its_shard_resubmitted_and_the_run_completes_exactly(
    cluster: Any, server: ThreadedServer, data: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    start = server.count()
    killed: list[int] = []

    def kill_one() -> None:
        server.wait_for(lambda: server.count() - start >= 40, timeout=60)
        pid = next(work.glob("shard-*.pid")).read_text()
        os.kill(int(pid), signal.SIGKILL)
        killed.append(int(pid))

    async def both() -> Any:
        killer = asyncio.create_task(asyncio.to_thread(kill_one))
        options = RayOptions(shard_rows=12, workers=2, work_dir=work)
        run = await arefine_file_ray(
            data, tmp_path / "out.jsonl", config(server), pairs=tmp_path / "pairs.jsonl", options=options
        )
        await killer
        return run

    run = asyncio.run(both())
    assert killed
    same_files(reference[0], tmp_path)
    assert run.summary.failed == 0
    # Only what the dead actor had in flight was sent twice.
    assert reference[1] <= server.count() - start < reference[1] + 2 * 8


def test_a_killed_driver_reruns_without_resending_a_finished_call(
    cluster: Any, server: ThreadedServer, data: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    address = ray.get_runtime_context().gcs_address
    start = server.count()
    args: list[str | Path] = [
        "refine",
        data,
        "-o",
        tmp_path / "out.jsonl",
        "--pairs",
        tmp_path / "pairs.jsonl",
        "-q",
    ]
    args += ["--base-url", server.base_url, "--model", "fake", "--concurrency", "8", "--executor", "ray"]
    args += ["--ray-address", address, "--work-dir", work, "--shard-rows", "6", "--ray-workers", "2"]
    proc = start_cli(*args, env=child_env())
    assert kill_when(proc, server, start + 60), proc.communicate()[1]
    proc.communicate()
    # The actors die with their driver; wait until the server hears nothing more.
    last, quiet_since = server.count(), time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        time.sleep(0.1)
        if server.count() != last:
            last, quiet_since = server.count(), time.monotonic()
    first = server.count() - start
    stored = stored_calls(work)
    assert 0 < stored <= first < reference[1]
    again = server.count()
    run = asyncio.run(
        arefine_file_ray(
            data, tmp_path / "out.jsonl", config(server), pairs=tmp_path / "pairs.jsonl",
            options=RayOptions(work_dir=work, shard_rows=6, workers=2),
        )
    )  # fmt: skip
    assert server.count() - again == reference[1] - stored  # no stored call is sent again
    same_files(reference[0], tmp_path)
    assert run.summary.complete


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, about its own settings
def test_ray_data_refines_the_same_rows(cluster: Any, server: ThreadedServer, tmp_path: Path) -> None:
    rows = alpaca_rows(12, seed=5)
    expected = asyncio.run(arefine(rows, config(server)))
    ds = ray.data.from_items(rows)
    out = ds.map_batches(
        RefineBatches,
        fn_constructor_kwargs={"config": config(server), "store_dir": str(tmp_path / "calls")},
        concurrency=1,
        batch_size=4,
        num_cpus=0.5,
    ).take_all()
    got = sorted(out, key=lambda r: r["instruction"])
    want = sorted(
        ({**(r.row or {}), "coevol_status": r.status} for r in expected), key=lambda r: r["instruction"]
    )
    assert [dict(r) for r in got] == want
    assert list((tmp_path / "calls").glob("actor-0000.coevol.db"))


def test_ray_refuses_the_embedded_model_and_a_shared_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a server for every role"):
        asyncio.run(arefine_file_ray(tmp_path / "in.jsonl", tmp_path / "o.jsonl", load_config(None, {})))
    cfg = load_config(None, {"base_url": "http://127.0.0.1:9/v1", "cache": str(tmp_path / "c.db")})
    with pytest.raises(ConfigError, match="SQLite must not be shared"):
        asyncio.run(arefine_file_ray(tmp_path / "in.jsonl", tmp_path / "o.jsonl", cfg))
    with pytest.raises(ConfigError, match="needs a server for every role"):
        RefineBatches({})


def test_without_ray_the_flag_gives_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from coevol.executors.on_ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtra, match=r"pip install 'coevol\[ray\]'"):
        import_ray()


def test_offset_and_limit_give_the_local_runs_rows_and_trace_positions(
    cluster: Any, server: ThreadedServer, data: Path, tmp_path: Path
) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()
    asyncio.run(
        arefine_file(
            data,
            tmp_path / "local/out.jsonl",
            config(server),
            pairs=tmp_path / "local/pairs.jsonl",
            offset=3,
            limit=20,
        )
    )
    asyncio.run(
        arefine_file_ray(
            data, tmp_path / "ray/out.jsonl", config(server), pairs=tmp_path / "ray/pairs.jsonl",
            offset=3, limit=20, options=RayOptions(shard_rows=6, workers=2),
        )
    )  # fmt: skip
    same_files(tmp_path / "local", tmp_path / "ray")
    indices = [
        orjson.loads(x)["index"] for x in (tmp_path / "ray/out.jsonl.trace.jsonl").read_bytes().splitlines()
    ]
    assert indices == list(range(20))


def _local_twin(server: ThreadedServer, data: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    asyncio.run(arefine_file(data, folder / "out.jsonl", config(server), pairs=folder / "pairs.jsonl"))
    return folder


def _ray(server: ThreadedServer, data: Path, folder: Path, work: Path) -> Any:
    return asyncio.run(
        arefine_file_ray(
            data, folder / "out.jsonl", config(server), pairs=folder / "pairs.jsonl",
            options=RayOptions(shard_rows=4, workers=2, work_dir=work),
        )
    )  # fmt: skip


def test_an_edited_extended_or_cut_input_is_refined_again_never_merged_stale(
    cluster: Any, server: ThreadedServer, tmp_path: Path
) -> None:
    rows = alpaca_rows(10, seed=11)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out, work = tmp_path / "ray", tmp_path / "work"
    out.mkdir()
    _ray(server, data, out, work)
    edits = {
        "edited": [*rows[:5], {**rows[5], "output": "A different answer."}, *rows[6:]],
        "extended": [*rows, *alpaca_rows(3, seed=12, prefix="More")],
        "cut": rows[:7],
    }
    for name, new_rows in edits.items():
        write_jsonl(data, new_rows)
        start = server.count()
        run = _ray(server, data, out, work)
        if name != "cut":  # new rows are refined, not taken from old shards (cut rows need no call)
            assert server.count() > start, name
        assert run.summary.rows == len(new_rows), name
        same_files(_local_twin(server, data, tmp_path / name), out)


def test_a_cut_off_or_tampered_shard_is_redone_before_the_merge(
    cluster: Any, server: ThreadedServer, tmp_path: Path
) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(10, seed=13))
    out, work = tmp_path / "ray", tmp_path / "work"
    out.mkdir()
    _ray(server, data, out, work)
    reference = _local_twin(server, data, tmp_path / "local")
    shard = work / "shard-00001.jsonl"
    shard.write_bytes(shard.read_bytes()[:-9])  # a cut-off last line
    trace = work / "shard-00002.jsonl.trace.jsonl"
    trace.write_bytes(trace.read_bytes() + b"junk\n")
    _ray(server, data, out, work)
    same_files(reference, out)
    assert b"junk" not in trace.read_bytes()


def test_sigterm_on_ray_exits_143_and_names_no_store_it_never_created(
    cluster: Any, server: ThreadedServer, data: Path, tmp_path: Path
) -> None:
    start = server.count()
    args: list[str | Path] = ["refine", data, "-o", tmp_path / "out.jsonl", "-q", "--executor", "ray"]
    args += ["--base-url", server.base_url, "--model", "fake", "--concurrency", "4", "--shard-rows", "6"]
    args += ["--ray-address", ray.get_runtime_context().gcs_address, "--ray-workers", "2"]
    proc = start_cli(*args, env=child_env())
    assert kill_when(proc, server, start + 20, signal.SIGTERM), proc.communicate()[1]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "coevol.db" not in err and "out.jsonl.shards" in err and "Traceback" not in err


def test_random_signals_then_a_rerun_end_byte_identical_on_ray(cluster: Any, tmp_path: Path) -> None:
    """Issue 17's signal loop with ``--executor ray`` (a bounded, seeded number of tries)."""
    from .test_signal_loop import signal_loop

    address = ray.get_runtime_context().gcs_address
    extra = ["--executor", "ray", "--ray-address", address, "--ray-workers", "2", "--shard-rows", "3"]
    signal_loop(tmp_path, extra, tries=3, window=6.0)  # each output's shards beside it


def test_a_ray_run_stops_on_the_budget_split_between_its_shards(
    cluster: Any, server: ThreadedServer, data: Path, reference: tuple[Path, int], tmp_path: Path
) -> None:
    """Each shard counts its own spend under its share of ``--max-budget``; the run stops."""
    from coevol.errors import BudgetExceeded

    cfg = load_config(
        None,
        {"base_url": server.base_url, "model": "fake", "concurrency": 2, "samples_in_flight": 1,
         "price": {"prompt": 1.0, "completion": 1.0}, "max_budget": 1e-6},
    )  # fmt: skip
    start = server.count()
    with pytest.raises(BudgetExceeded, match=r"of --max-budget \$1\.25e-07"):  # 1e-6 over 8 shards
        asyncio.run(
            arefine_file_ray(data, tmp_path / "out.jsonl", cfg, options=RayOptions(shard_rows=5, workers=2))
        )
    assert server.count() - start < reference[1] // 4
    assert not (tmp_path / "out.jsonl").exists()
