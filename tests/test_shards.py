"""Shard plans, the merge's hostile inputs, and one actor's share of the limits (no Ray needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from coevol.config import load_config
from coevol.engine.runner import RunPaths, RunSummary
from coevol.errors import OutputError
from coevol.executors.on_ray import share_config, summary_from_json, summary_to_json
from coevol.executors.shards import _reindexed, merge_shards, plan_shards, shard_sizes

from .engine_support import alpaca_rows, write_jsonl


def test_shard_sizes_cover_every_row_once() -> None:
    assert shard_sizes(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert shard_sizes(0, 4) == []
    with pytest.raises(ValueError):
        shard_sizes(3, 0)


def test_trace_index_is_shifted_to_the_runs_numbering() -> None:
    line = b'{"schema":"coevol.trace/2","index":3,"line":9,"status":"kept"}\n'
    assert (
        _reindexed(line, 40, Path("t"))
        == b'{"schema":"coevol.trace/2","index":43,"line":9,"status":"kept"}\n'
    )
    with pytest.raises(OutputError, match="not a coevol trace record"):
        _reindexed(b'{"index":3}\n', 40, Path("t"))


def test_the_plan_is_kept_and_another_runs_work_dir_is_refused(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(10))
    kwargs = {"pairs": None, "input_format": None, "limit": None, "shard_rows": None, "workers": 1}
    plan = plan_shards(data, tmp_path / "o.jsonl", tmp_path, offset=2, **kwargs)  # type: ignore[arg-type]
    assert [(s.offset, s.limit, s.start) for s in plan.shards] == [(2, 2, 0), (4, 2, 2), (6, 2, 4), (8, 2, 6)]
    # A rerun with another shard size asked for keeps the saved plan (the stores name those rows).
    again = plan_shards(data, tmp_path / "o.jsonl", tmp_path, offset=2, **{**kwargs, "shard_rows": 3})  # type: ignore[arg-type]
    assert again.shards == plan.shards
    with pytest.raises(OutputError, match="holds the shards of another run"):
        plan_shards(data, tmp_path / "o.jsonl", tmp_path, offset=0, **kwargs)  # type: ignore[arg-type]
    (tmp_path / "plan.json").write_bytes(b"\x00not json")
    with pytest.raises(OutputError, match="unreadable shard plan"):
        plan_shards(data, tmp_path / "o.jsonl", tmp_path, offset=2, **kwargs)  # type: ignore[arg-type]


def test_a_tampered_shard_trace_stops_the_merge_and_writes_nothing(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(2))
    work = tmp_path / "work"
    work.mkdir()
    plan = plan_shards(
        data,
        tmp_path / "o.jsonl",
        work,
        pairs=None,
        input_format=None,
        offset=0,
        limit=None,
        shard_rows=1,
        workers=1,
    )
    for shard in plan.shards:
        shard.output.write_bytes(b'{"instruction":"a","input":"","output":"b"}\n')
        shard.paths.trace.write_bytes(b'{"evil": "\x1b[31m"}\n')
    paths = RunPaths.beside(data, tmp_path / "o.jsonl")
    with pytest.raises(OutputError, match="not a coevol trace record"):
        merge_shards(plan.shards, paths, parquet_input=None)
    assert not paths.output.exists() and not paths.trace.exists()


def test_an_actors_share_of_every_limit() -> None:
    config = load_config(
        None,
        {
            "base_url": ["http://a/v1", {"base_url": "http://b/v1", "concurrency": 10, "rpm": 600}],
            "concurrency": 100,
            "rpm": 1000,
        },
    )
    shared = share_config(config, 4)
    assert shared.concurrency == 25 and shared.rpm == 250
    assert [(e.concurrency, e.rpm) for e in shared.endpoints] == [(None, None), (3, 150)]
    assert shared.role_endpoints("judge")[1] == "pool"


def test_summary_crosses_processes_as_json() -> None:
    s = RunSummary(rows=3, refined=2, kept=1, judged=4)
    s.rounds.update({0: 1, 2: 2})
    s.stop_reasons["rejected"] += 3
    back = summary_from_json(orjson.loads(orjson.dumps(summary_to_json(s))))
    assert back == s


def test_cli_executor_ray_without_ray_gives_the_install_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from coevol.cli.main import main

    monkeypatch.setitem(sys.modules, "ray", None)
    data = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(1))
    argv = ["refine", str(data), "-o", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1"]
    assert main([*argv, "--executor", "ray", "-q"]) == 1
    assert "pip install 'coevol[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_endpoint_group_names_are_plain() -> None:
    from coevol.errors import ConfigError

    with pytest.raises(ConfigError, match="endpoint_group"):
        load_config(None, {"base_url": "http://a/v1", "endpoint_group": "x\x1b[2J"})
    assert load_config(None, {"base_url": "http://a/v1", "endpoint_group": "qwen-7b:v2"}).endpoint_group


async def test_refine_batches_keeps_columns_and_rejects_a_bad_row_in_place(tmp_path: Path) -> None:
    import numpy as np

    from coevol.executors.ray_data import RefineBatches, plain
    from coevol.testing.responders import CoEvolResponder

    from .engine_support import ThreadedServer

    assert plain({"a": np.array([np.int64(1), np.str_("x")], dtype=object)}) == {"a": [1, "x"]}
    rows = alpaca_rows(3)
    batch = {
        "instruction": np.array([r["instruction"] for r in rows] + [""], dtype=object),
        "input": np.array([r["input"] for r in rows] + [""], dtype=object),
        "output": np.array([r["output"] for r in rows] + [""], dtype=object),
        "source": np.array(["a", "b", "c", "d"], dtype=object),
    }
    with ThreadedServer(responder=CoEvolResponder()) as server:
        refine = RefineBatches({"base_url": server.base_url, "model": "fake"}, store_dir=tmp_path / "calls")
        second = RefineBatches({"base_url": server.base_url, "model": "fake"}, store_dir=tmp_path / "calls")
        out = await refine(batch)
        sent = server.count()
        again = await second(batch)
        assert server.count() > sent  # the first actor still holds actor-0000: the second has its own store
        await refine.aclose()
        await second.aclose()
        third = RefineBatches({"base_url": server.base_url, "model": "fake"}, store_dir=tmp_path / "calls")
        before = server.count()
        await third(batch)
        await third.aclose()
        assert server.count() == before  # a later actor takes a free store and replays its calls
    assert list(out) == ["instruction", "input", "output", "source", "coevol_status"]
    assert out["source"] == ["a", "b", "c", "d"]
    assert out["coevol_status"][3] == "rejected" and out["instruction"][3] == ""
    assert set(out["coevol_status"][:3]) <= {"refined", "kept"}
    assert again["output"] == out["output"]
    assert sorted(p.name for p in (tmp_path / "calls").glob("*.db")) == [
        "actor-0000.coevol.db",
        "actor-0001.coevol.db",
    ]


def _plan(data: Path, work: Path, output: Path | None = None, size: int = 2) -> Any:
    work.mkdir(exist_ok=True)
    return plan_shards(
        data, output or work.parent / "o.jsonl", work, pairs=None, input_format=None,
        offset=0, limit=None, shard_rows=size, workers=1,
    )  # fmt: skip


def test_a_shard_is_planned_from_its_rows_content(tmp_path: Path) -> None:
    rows = alpaca_rows(5)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    first = _plan(data, tmp_path / "w")
    assert [s.limit for s in first.shards] == [2, 2, 1] and all(len(s.digest) == 64 for s in first.shards)
    edited = [*rows[:2], {**rows[2], "output": "changed"}, *rows[3:]]
    write_jsonl(data, edited)
    second = _plan(data, tmp_path / "w")
    assert [a.digest == b.digest for a, b in zip(first.shards, second.shards, strict=True)] == [
        True,
        False,
        True,
    ]
    write_jsonl(data, [*edited, *alpaca_rows(2, seed=9)])  # appended: the last shard grows, one more
    third = _plan(data, tmp_path / "w")
    assert [s.limit for s in third.shards] == [2, 2, 2, 1] and third.shards[2].digest != second.shards[
        2
    ].digest
    write_jsonl(data, edited[:3])  # cut
    assert [s.limit for s in _plan(data, tmp_path / "w").shards] == [2, 1]


def test_two_projects_sharing_a_work_dir_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "shared"
    for project in ("a", "b"):
        (tmp_path / project).mkdir()
        write_jsonl(tmp_path / project / "in.jsonl", alpaca_rows(3, seed=ord(project)))
    monkeypatch.chdir(tmp_path / "a")
    _plan(Path("in.jsonl"), work, Path("out.jsonl"))
    monkeypatch.chdir(tmp_path / "b")  # the same relative names, another project
    with pytest.raises(OutputError, match="holds the shards of another run"):
        _plan(Path("in.jsonl"), work, Path("out.jsonl"))


def _done_shards(tmp_path: Path) -> tuple[Any, Path]:
    data = write_jsonl(tmp_path / "in.jsonl", [*alpaca_rows(3), "{not json"])
    plan = _plan(data, tmp_path, size=4)
    (shard,) = plan.shards
    rows = [orjson.dumps(r) + b"\n" for r in alpaca_rows(3)]
    shard.output.write_bytes(b"".join(rows))
    trace = b"".join(b'{"schema":"coevol.trace/2","index":%d,"status":"kept"}\n' % i for i in range(3))
    shard.paths.trace.write_bytes(trace)
    shard.paths.rejects.write_bytes(b'{"line":4,"error":"bad","raw":"{not json"}\n')
    return shard, data


def test_a_cut_off_or_tampered_shard_is_found_before_the_merge(tmp_path: Path) -> None:
    from coevol.executors.shards import verify_shard

    shard, _ = _done_shards(tmp_path)
    assert verify_shard(shard) is None
    whole = shard.output.read_bytes()
    shard.output.write_bytes(whole[:-7])  # truncated mid-line
    assert "cut off" in (verify_shard(shard) or "")
    shard.output.write_bytes(whole[: whole.index(b"\n") + 1])  # truncated at a line end: rows missing
    assert "trace has 3 records for 1 output rows" in (verify_shard(shard) or "")
    shard.output.write_bytes(whole)
    trace = shard.paths.trace.read_bytes()
    shard.paths.trace.write_bytes(trace + b"junk\n")
    assert "line 4 is not a coevol trace record" in (verify_shard(shard) or "")
    shard.paths.trace.write_bytes(trace)
    shard.paths.rejects.unlink()
    assert "3 rows and 0 rejected for 4 planned" in (verify_shard(shard) or "")
    json_shard = type(shard)(0, 0, 4, 0, tmp_path / "s.json", None, shard.digest)
    json_shard.output.write_bytes(b"[\n" + b",\n".join(r.rstrip() for r in whole.splitlines()))  # no "]"
    assert "JSONDecodeError" in (verify_shard(json_shard) or "")
    shard.output.unlink()
    assert "is missing" in (verify_shard(shard) or "")


def test_a_marker_counts_only_for_the_rows_it_was_written_for(tmp_path: Path) -> None:
    from coevol.executors.on_ray import _finished_before
    from coevol.executors.shards import done_marker

    shard, data = _done_shards(tmp_path)
    summary = summary_to_json(RunSummary(rows=4))
    done_marker(shard).write_bytes(
        orjson.dumps({"fingerprint": "f", "digest": shard.digest, "summary": summary})
    )
    assert _finished_before(shard, "f") is not None
    assert _finished_before(shard, "other settings") is None
    rows = data.read_bytes().splitlines(keepends=True)
    data.write_bytes(rows[0].replace(b"Task 0", b"Task zero") + b"".join(rows[1:]))
    (edited,) = _plan(data, tmp_path, size=4).shards
    assert _finished_before(edited, "f") is None
    done_marker(shard).write_bytes(orjson.dumps({"fingerprint": "f", "summary": summary}))  # 0.2's marker
    assert _finished_before(shard, "f") is None


class _Actor:
    class _Method:
        def remote(self, spec: Any) -> object:
            return object()

    run = _Method()


class _FakeRay:
    """Ray's driver-side calls as a dead local node answers them: nothing ever finishes."""

    class exceptions:  # as ray.exceptions
        pass

    def __init__(self, nodes: Any) -> None:
        self._nodes = nodes

    def remote(self, **kwargs: Any) -> Any:
        class _Cls:
            @staticmethod
            def remote() -> _Actor:
                return _Actor()

        return lambda cls: _Cls

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
        return [], refs

    def nodes(self) -> Any:
        if isinstance(self._nodes, Exception):
            raise self._nodes
        return self._nodes

    def get_runtime_context(self) -> Any:
        class _Context:
            def get_node_id(self) -> str:
                return "local"

        return _Context()

    def kill(self, actor: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([{"NodeID": "local", "Alive": False}], "every Ray node is dead"),
        (
            [{"NodeID": "local", "Alive": False}, {"NodeID": "other", "Alive": True}],
            "driver's Ray node local",
        ),
        (ConnectionError("GCS gone"), r"lost the Ray cluster \(ConnectionError: GCS gone\)"),
    ],
)
def test_a_dead_node_stops_the_run_with_one_line_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nodes: Any, message: str
) -> None:
    from coevol.errors import CoevolError
    from coevol.executors import on_ray
    from coevol.executors.shards import Shard

    monkeypatch.setattr(on_ray, "_HEALTH_EVERY", 0.0)
    driver = on_ray._Driver(_FakeRay(nodes), on_ray.RayOptions(), 1, {})
    shard = Shard(0, 0, 1, 0, tmp_path / "s.jsonl", None, "d")
    with pytest.raises(CoevolError, match=message) as info:
        driver.run([shard], lambda *a: None)
    assert "\n" not in str(info.value) and "rerun the same command" in str(info.value)
    on_ray.check_cluster(_FakeRay([{"NodeID": "local", "Alive": True}]))  # a live node: nothing to say


class NodeDiedError(Exception):
    """Stands for ``ray.exceptions.NodeDiedError``."""


class _LosingCluster:
    """A cluster whose node dies under the first actor: its task fails with ``NodeDiedError``."""

    class exceptions:  # as ray.exceptions
        pass

    exceptions.NodeDiedError = NodeDiedError  # type: ignore[attr-defined]

    def __init__(self) -> None:
        self.actors = 0
        self.submitted: list[int] = []

    def remote(self, **kwargs: Any) -> Any:
        cluster = self

        class _Method:
            def remote(self, spec: Any) -> Any:
                cluster.submitted.append(spec["shard"].number)
                return (len(cluster.submitted), spec["shard"].number)

        class _Worker:
            run = _Method()

        class _Cls:
            @staticmethod
            def remote() -> _Worker:
                cluster.actors += 1
                return _Worker()

        return lambda cls: _Cls

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
        return refs[:1], refs[1:]

    def get(self, ref: Any) -> Any:
        submission, _ = ref
        if submission == 1:
            raise NodeDiedError("the node running this actor died")
        from coevol.engine.dispatch import RunStats

        return {"summary": summary_to_json(RunSummary(rows=1)), "stats": RunStats()}

    def kill(self, actor: Any) -> None:
        pass


def test_the_shard_of_a_lost_node_is_resubmitted_to_a_fresh_actor(tmp_path: Path) -> None:
    from coevol.executors import on_ray
    from coevol.executors.shards import Shard

    cluster = _LosingCluster()
    driver = on_ray._Driver(cluster, on_ray.RayOptions(), 1, {})
    done: list[int] = []
    shards = [Shard(i, i, 1, i, tmp_path / f"s{i}.jsonl", None, "d") for i in range(2)]
    driver.run(list(shards), lambda shard, *_: done.append(shard.number))
    assert cluster.submitted == [0, 0, 1]  # shard 0 again, after its node died
    assert sorted(done) == [0, 1] and cluster.actors == 2 and driver.deaths[0] == 1
