"""Turn a ``Config`` into live parts: one backend per distinct endpoint, a route per role.

This is the only place that reads API keys (from the environment variables the config names),
and it hands them straight to the HTTP client; they never enter the config, the store or a log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coevol.config import Config, EndpointConfig
from coevol.engine.capacity import learn_capacity
from coevol.engine.dispatch import Dispatcher, RetryPolicy, Route
from coevol.engine.endpoints import EndpointGroup
from coevol.errors import ConfigError
from coevol.llm.model_asset import EMBEDDED_MODEL_NAME
from coevol.llm.types import Backend, GenParams
from coevol.multiturn import fingerprint
from coevol.prompts.templates import PromptSet, load_prompts
from coevol.store.sqlite import Store

__all__ = ["EMBEDDED_MODEL_NAME", "Engine", "build_engine", "key_hint"]


@dataclass(slots=True)
class Engine:
    """Everything a run needs, built from one config; ``aclose()`` releases the backends."""

    config: Config
    prompts: PromptSet
    dispatcher: Dispatcher
    backends: list[Backend | EndpointGroup]
    fingerprint: str
    local: bool

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()


async def _local_backend(config: Config) -> Backend:
    """Load the model now, so a missing extra or a corrupt file fails before any work starts."""
    from coevol.llm.local import LlamaCppBackend

    backend = LlamaCppBackend(config.model_path, n_ctx=config.n_ctx, n_threads=config.n_threads)
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


def _http_backend(
    config: Config, base_url: str, api_key_env: str | None, limit: int | None = None
) -> Backend:
    import os

    from coevol.llm.openai_http import OpenAIHTTPBackend

    key = os.environ.get(api_key_env) if api_key_env else None
    roles = [
        r
        for r in config.active_roles()
        if any((e.base_url, e.api_key_env) == (base_url, api_key_env) for e in config.role_endpoints(r)[0])
    ]
    return OpenAIHTTPBackend(
        base_url,
        api_key=key,
        request_timeout=config.request_timeout,
        max_connections=max(limit or config.concurrency, 16),
        key_hint=key_hint(api_key_env, bool(key), ", ".join(f"roles.{r}" for r in roles)),
        max_answer_bytes=config.max_answer_bytes,
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


GroupKey = tuple[str | None, tuple[tuple[str, str | None], ...]]


async def _member(
    config: Config, e: EndpointConfig, given: dict[str, Backend], own: list[Backend | EndpointGroup]
) -> Backend:
    backend = given.get(e.base_url)
    if backend is None:
        backend = _http_backend(config, e.base_url, e.api_key_env, e.concurrency)  # pool: <= --concurrency
        own.append(backend)
        await _checked(backend)
    return backend


async def _build_group(
    config: Config,
    endpoints: list[EndpointConfig],
    group: str | None,
    given: dict[str, Backend],
    own: list[Backend | EndpointGroup],
) -> EndpointGroup:
    """The endpoint group of a role's servers (one server is a group of one), its requests cached
    under the group's name (``pool:NAME``, default ``pool:pool``), never a server's URL: a rerun
    against another host name or other servers replays what was paid for. Each server that
    reports its slots is capped at them (``coevol.engine.capacity``)."""
    members = [await _member(config, e, given, own) for e in endpoints]
    share = -(-config.concurrency // len(endpoints))  # --concurrency is the whole group's
    pool = EndpointGroup(
        members,
        name=group or "pool",
        shown=_shown(group, members),
        limits=[e.concurrency or share for e in endpoints],
        rpms=[e.rpm for e in endpoints],
        max_retry_after=config.max_retry_after,
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
    config: Config,
    made: dict[GroupKey, Backend | EndpointGroup],
    given: dict[str, Backend],
    own: list[Backend | EndpointGroup],
) -> dict[str, Route]:
    """A route per role; backends are created into ``made`` (those created here also into ``own``)."""
    routes: dict[str, Route] = {}
    served: set[tuple[GroupKey, str]] = set()  # groups whose servers were checked for a model
    for role in config.active_roles():
        rc = config.role(role)
        endpoints, group = config.role_endpoints(role)
        key: GroupKey = (group, tuple((e.base_url, e.api_key_env) for e in endpoints))
        if not endpoints:
            if key not in made:
                made[key] = await _local_backend(config)
                own.append(made[key])
            model = rc.model or EMBEDDED_MODEL_NAME
        else:
            if key not in made:
                made[key] = await _build_group(config, endpoints, group, given, own)
            model = rc.model or await _resolve_model(made[key])
            if rc.model and (key, rc.model) not in served:
                await _serving(made[key], rc.model)
                served.add((key, rc.model))
        assert rc.max_tokens is not None and rc.temperature is not None and rc.top_p is not None
        params = GenParams(max_tokens=rc.max_tokens, temperature=rc.temperature, top_p=rc.top_p, seed=rc.seed)
        routes[role] = Route(made[key], model, params, bool(rc.merge_system))
    return routes


async def build_engine(
    config: Config, *, store: Store | None = None, backends: dict[str, Backend] | None = None
) -> Engine:
    """Build backends and routes. ``backends`` maps a base URL to a ready backend (tests, fakes).

    When building fails (a refused key, a wrong base URL, no model), the backends made so far are
    closed before the error propagates: no pooled session is left for the garbage collector.
    """
    prompts = load_prompts(config.prompts_dir)
    made: dict[GroupKey, Backend | EndpointGroup] = {}
    own: list[Backend | EndpointGroup] = []
    try:
        routes = await _routes(config, made, backends or {}, own)
    except BaseException:
        for backend in own:
            await backend.aclose()
        raise
    local = any(not servers for _, servers in made)
    pools = [b for b in made.values() if isinstance(b, EndpointGroup) and len(b.servers) > 1]
    dispatcher = Dispatcher(
        routes,
        store=store,
        max_in_flight=config.concurrency,
        retry=RetryPolicy(max_retries=config.max_retries, max_retry_after=config.max_retry_after),
        rpm=config.rpm,
        tpm=config.tpm,
    )
    dispatcher.stats.pools = pools
    parts: list[Any] = [
        dict(prompts.texts),
        {
            role: [r.backend.endpoint, r.model, r.params.as_body(), r.merge_system]
            for role, r in routes.items()
        },
        [config.mode, config.max_rounds, config.judge, config.judge_reasks, config.judge_early_exit],
        config.conversation.model_dump(),
    ]
    tree = config.tree_settings()
    if tree is not None:  # only then: a CoEvol run's fingerprint (and resume) stays as it was
        parts.append(["tree", tree.to_dict()])
    return Engine(config, prompts, dispatcher, list(made.values()), fingerprint(parts), local)
