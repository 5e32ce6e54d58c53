"""Turn a run plan into live parts: one backend per distinct endpoint, a route per role.

This is the only place that reads API keys (from the environment variables the config names),
and it hands them straight to the HTTP client; they never enter the config, the store or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coevol.config import Config
from coevol.domain import COEVOL_ROLES
from coevol.engine.capacity import learn_capacity
from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.engine.endpoints import EndpointGroup
from coevol.engine.runplan import RolePlan, RunPlan, Server
from coevol.errors import ConfigError
from coevol.llm.model_asset import EMBEDDED_MODEL_NAME, EMBEDDED_MODELS
from coevol.llm.types import Backend
from coevol.multiturn import fingerprint
from coevol.prompts.templates import PromptSet, load_prompts
from coevol.store.sqlite import Store

__all__ = ["EMBEDDED_MODEL_NAME", "Engine", "build_engine", "key_hint"]


@dataclass(slots=True)
class Engine:
    """Everything a run needs, built from one run plan; ``aclose()`` releases the backends."""

    plan: RunPlan
    prompts: PromptSet
    dispatcher: Dispatcher
    backends: list[Backend | EndpointGroup]
    fingerprint: str
    local: bool

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()


async def _local_backend(plan: RunPlan) -> Backend:
    """Load the model now, so a missing extra or a corrupt file fails before any work starts."""
    from coevol.llm.local import LlamaCppBackend

    # --judge prob reads logprobs, which llama.cpp computes only for a model built with every
    # position's logits: slower and larger for every role, so paid only when the judge reads them.
    backend = LlamaCppBackend(
        plan.model_path,
        n_ctx=plan.n_ctx,
        n_threads=plan.n_threads,
        logprobs=plan.loop.judge == "prob",
        embedded=EMBEDDED_MODELS[plan.embedded_model or "0.5b"],
    )
    await backend.load()
    return backend


def key_hint(api_key_env: str | None, key_set: bool, roles: str) -> str:
    """Where a server's key came from, for the message of a 401/403 (the key itself never)."""
    if api_key_env is None:
        return (
            f"no key was sent: set api_key_env for {roles} (the top-level key goes only to the "
            "top-level base_url)"
        )
    if key_set:
        return f"the key came from ${api_key_env}"
    return f"no key was sent: ${api_key_env} is not set"


def _http_backend(plan: RunPlan, server: Server) -> Backend:
    import os

    from coevol.llm.openai_http import OpenAIHTTPBackend

    base_url, api_key_env = server.base_url, server.api_key_env
    key = os.environ.get(api_key_env) if api_key_env else None
    roles = [
        r
        for r, rp in plan.roles.items()
        if any((s.base_url, s.api_key_env) == (base_url, api_key_env) for s in rp.servers)
    ]
    limits = plan.limits
    return OpenAIHTTPBackend(
        base_url,
        api_key=key,
        request_timeout=limits.request_timeout,
        connect_timeout=limits.timeouts.connect,
        first_byte_timeout=limits.timeouts.first_byte,
        idle_timeout=limits.timeouts.idle,
        transport=limits.transport,
        max_connections=max(server.concurrency or limits.concurrency, 16),
        key_hint=key_hint(api_key_env, bool(key), ", ".join(f"roles.{r}" for r in roles)),
        max_answer_bytes=limits.max_answer_bytes,
    )


async def _resolve_model(backend: Backend | EndpointGroup) -> str:
    """No ``--model``: use the server's only model (the usual vLLM / llama.cpp server case)."""
    list_models = getattr(backend, "list_models", None)
    where = backend.endpoint
    if list_models is None:
        raise ConfigError(f"no model given for {where}; pass --model")
    models: list[str] = await list_models()
    if len(models) == 1:
        return models[0]
    listed = ", ".join(models[:10]) or "none"
    raise ConfigError(f"no model given for {where} and it serves {len(models)} ({listed}); pass --model")


async def _serving(group: Backend | EndpointGroup, model: str) -> None:
    """Refuse a group with a server that does not serve ``model`` while another one lists it."""
    if isinstance(group, EndpointGroup) and len(group.servers) > 1:
        await group.check_model(model)


async def _checked(backend: Backend) -> Backend:
    """Run the backend's setup check (key accepted, base URL right) before any work is sent."""
    check = getattr(backend, "check", None)
    if check is not None:
        await check()
    return backend


GroupKey = tuple[str | None, tuple[tuple[str, str | None], ...], bool]


async def _batched(
    plan: RunPlan, online: Backend | EndpointGroup, server: Server, store: Store | None, prompts: PromptSet
) -> Backend:
    """``--batch``: the role's server answers through its Batch API (refused first if it has none)."""
    import os

    from coevol.llm.batch import BatchBackend
    from coevol.llm.batch_api import BatchAPI

    key = os.environ.get(server.api_key_env) if server.api_key_env else None
    api = BatchAPI(server.base_url, api_key=key, key_hint=key_hint(server.api_key_env, bool(key), "--batch"))
    try:
        await api.probe()
    except BaseException:
        await api.aclose()
        raise
    roles = {prompts[f"{r}_system"]: r.value for r in COEVOL_ROLES}
    return BatchBackend(online, api, store=store, poll=plan.batch_poll, roles=roles)


def _check_batchable(role: str, servers: tuple[Server, ...]) -> None:
    if not servers:
        raise ConfigError(
            f"--batch: roles.{role} runs on the embedded model, which has no Batch API; give it a base_url"
        )
    if len(servers) > 1:
        raise ConfigError(
            f"--batch: roles.{role} has {len(servers)} servers; a batch goes to one server: "
            "give it one base_url"
        )


async def _member(
    plan: RunPlan, server: Server, given: dict[str, Backend], own: list[Backend | EndpointGroup]
) -> Backend:
    backend = given.get(server.base_url)
    if backend is None:
        backend = _http_backend(plan, server)  # pool: <= --concurrency
        own.append(backend)
        await _checked(backend)
    return backend


async def _build_group(
    plan: RunPlan, role: RolePlan, given: dict[str, Backend], own: list[Backend | EndpointGroup]
) -> EndpointGroup:
    """The endpoint group of a role's servers (one server is a group of one), its requests cached
    under the group's name (``pool:NAME``, default ``pool:pool``), never a server's URL: a rerun
    against another host name or other servers replays what was paid for. Each server that
    reports its slots is capped at them (``coevol.engine.capacity``)."""
    servers, group, limits = role.servers, role.group, plan.limits
    members = [await _member(plan, s, given, own) for s in servers]
    share = -(-limits.concurrency // len(servers))  # --concurrency is the whole group's
    pool = EndpointGroup(
        members,
        name=group or "pool",
        shown=_shown(group, members),
        limits=[s.concurrency or share for s in servers],
        rpms=[s.rpm for s in servers],
        max_retry_after=limits.max_retry_after,
    )
    if len(members) == 1 and group is None:
        pool.former = members[0].endpoint  # what coevol 0.2 keyed a single server's calls by
    own[:] = [b for b in own if b not in members]
    own.append(pool)  # the group closes its servers
    await learn_capacity(pool)
    return pool


def _shown(group: str | None, members: list[Backend]) -> str:
    """What the trace and ``show`` say served a role: the group the user named, and its servers."""
    servers = ", ".join(m.endpoint for m in members)
    return f"{group}: {servers}" if group and group != "pool" else servers


async def _routes(
    plan: RunPlan,
    made: dict[GroupKey, Backend | EndpointGroup],
    given: dict[str, Backend],
    own: list[Backend | EndpointGroup],
    batch: tuple[Store | None, PromptSet],
) -> dict[str, Route]:
    """A route per role; backends are created into ``made`` (those created here also into ``own``)."""
    routes: dict[str, Route] = {}
    served: set[tuple[GroupKey, str]] = set()  # groups whose servers were checked for a model
    for role, rp in plan.roles.items():
        key: GroupKey = (rp.group, tuple((s.base_url, s.api_key_env) for s in rp.servers), rp.batch)
        if rp.batch:
            _check_batchable(role, rp.servers)
            if key not in made:
                online = await _build_group(plan, rp, given, own)
                made[key] = await _batched(plan, online, rp.servers[0], *batch)
                own[:] = [b for b in own if b is not online]
                own.append(made[key])  # it closes the online group it wraps
            model = rp.model or await _resolve_model(made[key])
        elif not rp.servers:
            if key not in made:
                made[key] = await _local_backend(plan)
                own.append(made[key])
            model = rp.model or EMBEDDED_MODELS[plan.embedded_model or "0.5b"].name
        else:
            if key not in made:
                made[key] = await _build_group(plan, rp, given, own)
            model = rp.model or await _resolve_model(made[key])
            if rp.model and (key, rp.model) not in served:
                await _serving(made[key], rp.model)
                served.add((key, rp.model))
        routes[role] = Route(made[key], model, rp.params, rp.merge_system)
    return routes


async def build_engine(
    plan: RunPlan | Config, *, store: Store | None = None, backends: dict[str, Backend] | None = None
) -> Engine:
    """Build backends and routes. ``backends`` maps a base URL to a ready backend (tests, fakes).

    A ``Config`` is resolved into its run plan first (callers that hold one, such as tests).
    When building fails (a refused key, a wrong base URL, no model), the backends made so far are
    closed before the error propagates: no pooled session is left for the garbage collector.
    """
    if isinstance(plan, Config):
        plan = RunPlan.of(plan)
    prompts = load_prompts(plan.prompts_dir)
    made: dict[GroupKey, Backend | EndpointGroup] = {}
    own: list[Backend | EndpointGroup] = []
    try:
        routes = await _routes(plan, made, backends or {}, own, (store, prompts))
    except BaseException:
        for backend in own:
            await backend.aclose()
        raise
    local = any(not servers for _, servers, _ in made)
    pools = [b for b in made.values() if isinstance(b, EndpointGroup) and len(b.servers) > 1]
    limits = plan.limits
    dispatcher = Dispatcher(
        routes,
        store=store,
        max_in_flight=limits.concurrency,
        retry=RetryPolicy(max_retries=limits.max_retries, max_retry_after=limits.max_retry_after),
        rpm=limits.rpm,
        tpm=limits.tpm,
    )
    dispatcher.stats.pools = pools
    dispatcher.stats.batches = [b for b in made.values() if getattr(b, "batched", False)]
    parts: list[Any] = [
        dict(prompts.texts),
        {
            role: [r.backend.endpoint, r.model, r.params.as_body(), r.merge_system]
            for role, r in routes.items()
        },
        *plan.fingerprint_parts(),
    ]
    return Engine(plan, prompts, dispatcher, list(made.values()), fingerprint(parts), local)
