"""``--executor ray``: the same refinement, its shards run by Ray actors, merged into one output.

Shaped like datatrove's Ray executor: the driver plans shards, hands each to an actor, keeps a
completion marker per shard in the work directory and skips marked shards on a rerun; an actor that
dies (worker crash, actor death, lost object, dead node) has its shard resubmitted to a fresh actor
a bounded number of times. Each actor runs the ordinary engine (``arefine_file``) on its shard, with
its own event loop and HTTP sessions, its share of every server's concurrency, and its own store
beside its shard's files, so a rerun resumes a half-done shard without re-sending a finished call.
An error inside a sample stays that sample's failure, as locally; an error that stops a shard
(``--max-budget``, ``--max-errors``, a judge without verdicts, a refused key) stops the run.
Each shard runs the one row runner with the run's stop rules, counting its own calls and rows:
``--max-budget`` is split evenly between the shards this run starts, so their total stays within
it; ``--max-errors`` and ``--max-unparseable`` hold per shard (a shard cannot see another's
failures while they run).

The embedded model is never loaded once per actor: on Ray every role must name a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from coevol import errors
from coevol.audit import JudgeAudit
from coevol.config import Config
from coevol.engine.dispatch import RunStats
from coevol.engine.runner import ProgressFn, RunSummary
from coevol.engine.runplan import RunPlan
from coevol.errors import CoevolError, ConfigError, MissingExtra, OutputError
from coevol.executors.shards import Shard, done_marker, merge_shards, plan_shards, verify_shard
from coevol.io.writers import write_whole

__all__ = ["RayOptions", "ShardWorker", "arefine_file_ray", "import_ray", "share_config"]

_LOCK_WAIT = 60.0  # seconds a resubmitted shard waits for a dead actor's lock to be released
_HEALTH_EVERY = 5.0  # seconds without a finished shard between two looks at the cluster's nodes


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtra("--executor ray", "ray") from None
    return ray


@dataclass(frozen=True, slots=True)
class RayOptions:
    address: str | None = None  # None: $RAY_ADDRESS, else a local instance
    work_dir: Path | None = None  # default: OUTPUT.shards beside the output
    workers: int | None = None  # actors; default: the cluster's CPUs (at most 64)
    shard_rows: int | None = None
    max_shard_retries: int = 3
    num_cpus: float = 1.0  # per actor, for Ray's scheduler


def check_ray_config(config: Config) -> None:
    """Refuse what cannot run on a cluster, before anything starts."""
    local = RunPlan.of(config).local_roles()
    if local:
        raise ConfigError(
            f"--executor ray needs a server for every role ({', '.join(local)} would use the embedded "
            "model, which is not loaded once per actor): pass --base-url (a vLLM, llama.cpp or Ray "
            "Serve LLM server)"
        )
    if config.cache is not None:
        raise ConfigError(
            "--cache cannot be used with --executor ray: SQLite must not be shared between hosts; "
            "every shard keeps its own store under --work-dir"
        )
    if config.judge_check:
        raise ConfigError(
            "--judge-check cannot be used with --executor ray (each shard would check the judge "
            "again): run `coevol judge-check` with the same options first"
        )


def share_config(config: Config, workers: int) -> Config:
    """One actor's share of the run's concurrency and rate limits (every server's, too)."""

    def part(value: int) -> int:
        return max(1, math.ceil(value / workers))

    update: dict[str, Any] = {"concurrency": part(config.concurrency)}
    if config.samples_in_flight is not None:
        update["samples_in_flight"] = part(config.samples_in_flight)
    for name in ("rpm", "tpm"):
        value = getattr(config, name)
        if value is not None:
            update[name] = value / workers

    def endpoints(items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for e in items:
            d = e.model_dump()
            if e.concurrency is not None:
                d["concurrency"] = part(e.concurrency)
            if e.rpm is not None:
                d["rpm"] = e.rpm / workers
            out.append(d)
        return out

    data = config.model_dump()
    data.update(update)
    if config.endpoints:
        data["endpoints"] = endpoints(config.endpoints)
    for role, rc in config.roles.items():
        if rc.endpoints:
            data["roles"][role]["endpoints"] = endpoints(rc.endpoints)
    return Config.model_validate(data)


# --- summaries across processes ------------------------------------------------------------------


def summary_to_json(s: RunSummary) -> dict[str, Any]:
    out = {f.name: getattr(s, f.name) for f in fields(s)}
    out["rounds"] = sorted(s.rounds.items())
    out["stop_reasons"] = dict(s.stop_reasons)
    out["failure_causes"] = dict(s.failure_causes)
    out["audit"] = asdict(s.audit)
    return out


def summary_from_json(d: Mapping[str, Any]) -> RunSummary:
    s = RunSummary()
    for f in fields(s):
        if f.name in d and f.name not in ("rounds", "stop_reasons", "failure_causes", "audit"):
            setattr(s, f.name, d[f.name])
    s.rounds = Counter({int(k): int(v) for k, v in d.get("rounds", [])})
    s.stop_reasons = Counter(d.get("stop_reasons", {}))
    s.failure_causes = Counter(d.get("failure_causes", {}))
    s.audit = JudgeAudit(**d.get("audit", {}))
    return s


def add_summary(total: RunSummary, s: RunSummary) -> None:
    for name in ("rows", "refined", "kept", "failed", "rejected", "resumed", "accepted_edits"):
        setattr(total, name, getattr(total, name) + getattr(s, name))
    for name in ("judged", "unparseable"):
        setattr(total, name, getattr(total, name) + getattr(s, name))
    total.rounds.update(s.rounds)
    total.stop_reasons.update(s.stop_reasons)
    total.failure_causes.update(s.failure_causes)
    total.audit.merge(s.audit)


def add_stats(total: RunStats, s: RunStats) -> None:
    for name in ("sent", "cached", "retries", "failed_calls", "rate_limited"):
        setattr(total, name, getattr(total, name) + getattr(s, name))
    for k, v in s.errors.items():
        total.errors[k] = total.errors.get(k, 0) + v
    for mine, theirs in ((total.usage, s.usage), (total.cached_usage, s.cached_usage)):
        for role, usage in theirs.items():
            if role in mine:
                mine[role].add(usage)
            else:
                mine[role] = usage


# --- the actor -----------------------------------------------------------------------------------


class ShardWorker:
    """One Ray actor: runs shards one after another, each through ``arefine_file`` on a new loop."""

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        shard: Shard = spec["shard"]
        write_whole(shard.output.with_name(shard.output.name + ".pid"), str(os.getpid()).encode())
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                return self._run(spec, shard)
            except OutputError as exc:
                # A resubmitted shard may find the dead actor's lock not yet released by the OS.
                if "already writing this output" not in str(exc) or time.monotonic() > deadline:
                    return {"error": [type(exc).__name__, str(exc)]}
                time.sleep(0.5)

    def _run(self, spec: dict[str, Any], shard: Shard) -> dict[str, Any]:
        from coevol.api import arefine_file

        config: Config = spec["config"]
        result: dict[str, Any] = {}
        try:
            run = asyncio.run(
                arefine_file(
                    spec["input"],
                    shard.output,
                    config,
                    pairs=shard.pairs,
                    input_format=spec["input_format"],
                    output_format=spec["output_format"],
                    offset=shard.offset,
                    limit=shard.limit,
                    retry_failed=spec["retry_failed"],
                )
            )
        except OutputError:
            raise
        except CoevolError as exc:
            return {"error": [type(exc).__name__, str(exc)]}
        run.stats.pools = []
        result["summary"] = summary_to_json(run.summary)
        result["stats"] = run.stats
        marker = {"fingerprint": spec["fingerprint"], "digest": shard.digest, "summary": result["summary"]}
        write_whole(done_marker(shard), orjson.dumps(marker))
        return result


def _error(name: str, message: str) -> CoevolError:
    cls = getattr(errors, name, CoevolError)
    if not (isinstance(cls, type) and issubclass(cls, CoevolError)):
        cls = CoevolError
    try:
        return cls(message)
    except TypeError:
        return CoevolError(message)


def _finished_before(shard: Shard, fingerprint: str) -> RunSummary | None:
    """The shard's summary when its marker says it was completed under these settings, from the
    very rows the shard holds now."""
    marker = done_marker(shard)
    if not marker.exists() or not shard.output.exists():
        return None
    try:
        data = orjson.loads(marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    if not shard.digest or data.get("digest") != shard.digest:
        return None
    summary = summary_from_json(data.get("summary") or {})
    summary.resumed = summary.rows
    return summary


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    names = ("RayActorError", "WorkerCrashedError", "ObjectLostError", "NodeDiedError", "OwnerDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class _Driver:
    """Submits shards to a pool of actors, replaces dead ones, collects the results."""

    def __init__(self, ray: Any, options: RayOptions, workers: int, base: dict[str, Any]) -> None:
        self.ray = ray
        self.options = options
        self.base = base
        self.remote = ray.remote(num_cpus=options.num_cpus, max_restarts=0)(ShardWorker)
        self.idle = [self.remote.remote() for _ in range(workers)]
        self.busy: dict[Any, tuple[Any, Shard]] = {}
        self.deaths: Counter[int] = Counter()
        self.stopping = False  # set by ``close``: a stopped run resubmits nothing

    def submit(self, shard: Shard) -> None:
        actor = self.idle.pop()
        self.busy[actor.run.remote({**self.base, "shard": shard})] = (actor, shard)

    def close(self) -> None:
        self.stopping = True
        for actor in [*self.idle, *(a for a, _ in self.busy.values())]:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)

    def run(self, pending: list[Shard], on_done: Any) -> None:
        ray = self.ray
        deaths = _death_errors(ray)
        checked = time.monotonic()
        while (pending or self.busy) and not self.stopping:
            while pending and self.idle:
                self.submit(pending.pop(0))
            try:
                ready, _ = ray.wait(list(self.busy), num_returns=1, timeout=1.0)
            except Exception as exc:  # Ray's own errors when its local node or cluster is gone
                raise _lost(exc) from None
            if not ready and time.monotonic() - checked > _HEALTH_EVERY:
                check_cluster(ray)
                checked = time.monotonic()
            for ref in ready:
                actor, shard = self.busy.pop(ref)
                try:
                    result = ray.get(ref)
                except deaths as exc:
                    self._died(shard, exc)
                    pending.insert(0, shard)
                    continue
                self.idle.append(actor)
                if "error" in result:
                    raise _error(*result["error"])
                on_done(shard, summary_from_json(result["summary"]), result["stats"])

    def _died(self, shard: Shard, exc: BaseException) -> None:
        if self.stopping:
            return
        self.deaths[shard.number] += 1
        if self.deaths[shard.number] > self.options.max_shard_retries:
            raise CoevolError(
                f"shard {shard.number} lost its actor {self.deaths[shard.number]} times "
                f"(last: {type(exc).__name__}); rerun the same command to resume"
            )
        self.idle.append(self.remote.remote())


def _lost(exc: BaseException) -> CoevolError:
    return CoevolError(
        f"lost the Ray cluster ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        "finished shards are kept: rerun the same command to resume"
    )


def check_cluster(ray: Any) -> None:
    """Stop with one line when this driver's node (or every node) is dead: Ray's own wait would
    block until killed. A lost node among live ones fails its actors, whose shards are resubmitted."""
    try:
        nodes = ray.nodes()
        mine = ray.get_runtime_context().get_node_id()
    except Exception as exc:
        raise _lost(exc) from None
    alive = {n.get("NodeID") for n in nodes if n.get("Alive")}
    if not alive:
        raise CoevolError(
            "every Ray node is dead (was the local Ray instance stopped?); finished shards are kept: "
            "rerun the same command to resume"
        )
    if mine not in alive:
        raise CoevolError(
            f"this driver's Ray node {str(mine)[:12]} is dead; finished shards are kept: "
            "rerun the same command to resume"
        )


class _Totals:
    """Each shard's counts summed into the run's live summary: a redone shard replaces its own
    summary (its calls, really sent, add up)."""

    def __init__(
        self,
        summary: RunSummary,
        stats: RunStats,
        progress: ProgressFn | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.summary, self.stats, self.progress, self.loop = summary, stats, progress, loop
        self.shards: dict[int, RunSummary] = {}

    def put(self, number: int, summary: RunSummary, stats: RunStats | None) -> None:
        self.shards[number] = summary
        if stats is not None:
            add_stats(self.stats, stats)
        fresh = RunSummary()
        for f in fields(RunSummary):
            if f.name not in ("elapsed", "stopped", "resumable", "complete"):
                setattr(self.summary, f.name, getattr(fresh, f.name))
        for each in self.shards.values():
            add_summary(self.summary, each)
        self.show()

    def show(self) -> None:
        if self.progress is not None:
            self.progress(self.summary, self.stats)

    def from_thread(self, shard: Shard, summary: RunSummary, stats: RunStats) -> None:
        """Called on the driver's thread: count on the event loop, where the display lives."""
        self.loop.call_soon_threadsafe(self.put, shard.number, summary, stats)


async def _complete(
    ray: Any,
    options: RayOptions,
    workers: int,
    shards: tuple[Shard, ...],
    base: dict[str, Any],
    totals: _Totals,
) -> None:
    """Run every shard not done for its rows, then verify every shard's files; a bad one (cut off,
    tampered, rows missing) loses its marker and is redone once, and one still bad stops the run."""
    fingerprint = base["fingerprint"]
    pending = []
    for shard in shards:
        before = _finished_before(shard, fingerprint)
        if before is None:
            pending.append(shard)
        else:
            totals.put(shard.number, before, None)
    totals.show()
    for attempt in range(2):
        if pending:
            n = min(workers, len(pending))
            shared = share_config(base["config"], n)
            if shared.max_budget is not None:  # each shard's run counts its own spend
                shared = shared.model_copy(update={"max_budget": shared.max_budget / len(pending)})
            driver = _Driver(ray, options, n, {**base, "config": shared})
            try:
                await asyncio.to_thread(driver.run, pending, totals.from_thread)
            finally:
                driver.close()
        bad = [(shard, why) for shard in shards if (why := verify_shard(shard)) is not None]
        if not bad:
            return
        if attempt:
            shard, why = bad[0]
            raise OutputError(f"shard {shard.number} ({shard.output}) is still unusable after a redo: {why}")
        for shard, why in bad:
            logging.getLogger("coevol").warning("shard %d is redone: %s", shard.number, why)
            done_marker(shard).unlink(missing_ok=True)
        pending = [shard for shard, _ in bad]


async def _fingerprint(config: Config) -> str:
    """The run's settings fingerprint, from an engine built once here (servers are checked too)."""
    from coevol.engine.build import build_engine

    engine = await build_engine(config)
    try:
        return engine.fingerprint
    finally:
        await engine.aclose()


def _init(ray: Any, address: str | None) -> bool:
    """Join the cluster (or start a local instance); True when this call started Ray."""
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    # Ray's own INFO lines would tear through the progress display; its warnings still show.
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    # ray.init installs a SIGTERM handler that exits with status 15; the CLI's own handler (a clean
    # stop, exit 143) must stay in place.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray.init(address=target, **kwargs)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                if handler is not None:
                    signal.signal(sig, handler)
    return True


async def arefine_file_ray(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: Config,
    *,
    pairs: str | os.PathLike[str] | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    retry_failed: bool = False,
    progress: ProgressFn | None = None,
    options: RayOptions | None = None,
) -> Any:
    """``arefine_file`` on Ray: the same files, byte for byte, and the same ``FileRun``."""
    from coevol.api import FileRun, claimed_lock, prepare, run_paths
    from coevol.io.writers import recover

    ray = import_ray()
    options = options or RayOptions()
    check_ray_config(config)
    paths = run_paths(input, output, pairs, config)
    prepare(paths, None)
    work_dir = options.work_dir or paths.shards
    config = config.model_copy(update={"run_dir": None})  # each shard's files stay in its folder
    summary, stats = RunSummary(), RunStats()
    started = time.monotonic()
    description = f"coevol refine {paths.input} -o {paths.output} --executor ray"
    with claimed_lock(paths, description):
        recovered = recover(paths.journal, paths.finals())
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create --work-dir {work_dir}: {exc.strerror or exc}") from None
        fingerprint = await _fingerprint(config)
        started_ray = _init(ray, options.address)
        try:
            workers = options.workers or max(1, min(64, int(ray.cluster_resources().get("CPU", 1))))
            plan = plan_shards(
                paths.input, paths.output, work_dir, pairs=paths.pairs, input_format=input_format,
                offset=offset, limit=limit, shard_rows=options.shard_rows, workers=workers,
            )  # fmt: skip
            totals = _Totals(summary, stats, progress, asyncio.get_running_loop())
            base = {
                "config": config,
                "input": paths.input,
                "input_format": input_format,
                "output_format": output_format,
                "retry_failed": retry_failed,
                "fingerprint": fingerprint,
            }
            await _complete(ray, options, workers, plan.shards, base, totals)
            same_shape = output_format is None or output_format == input_format
            info = merge_shards(plan.shards, paths, parquet_input=paths.input if same_shape else None)
        except BaseException as exc:
            summary.stopped = summary.stopped or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            summary.elapsed = time.monotonic() - started
            if started_ray:
                ray.shutdown()
    summary.complete = True
    return FileRun(paths, summary, stats, info, recovered)
