"""The run plan: a ``Config`` resolved once, at the CLI or API, into what every floor below needs.

Role resolution (which servers serve a role, with which key variable, model, sampling and price)
has rules of its own (``Config.role`` and ``Config.role_endpoints``: a role's key never goes to
another role's server). They run here, once per run; the engine, the row runner, compare and the
executors read the plan and never the raw configuration, and nothing on the per-call path looks a
setting up. The stop rules travel in the plan too, so every entry point enforces the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coevol.config import Config
from coevol.conversation import ConversationSettings
from coevol.llm.timeouts import Timeouts
from coevol.llm.transport import TransportName
from coevol.llm.types import GenParams
from coevol.loop import LoopSettings
from coevol.roles.prob import JUDGE_TOP_LOGPROBS

__all__ = ["Limits", "RolePlan", "RunPlan", "Server", "StopRules"]


@dataclass(frozen=True, slots=True)
class Server:
    """One server of a role, with the name of the environment variable holding its key."""

    base_url: str
    api_key_env: str | None = None
    concurrency: int | None = None  # this server's own in-flight cap (a group member)
    rpm: float | None = None


@dataclass(frozen=True, slots=True)
class RolePlan:
    """One role, resolved: where its requests go and how they are sampled and priced.

    ``servers`` empty means the embedded model. ``group`` names a pool of servers in cache keys
    (``None``: a single server, keyed by its own masked URL). ``price`` is dollars per million
    tokens (prompt, completion), or ``None`` when the role has no price.
    """

    model: str | None
    servers: tuple[Server, ...]
    group: str | None
    params: GenParams
    merge_system: bool
    price: tuple[float, float] | None = None
    batch: bool = False  # --batch: its calls go through the server's Batch API


@dataclass(frozen=True, slots=True)
class Limits:
    """Throughput and fault settings of the run's scheduler and HTTP clients."""

    concurrency: int
    samples_in_flight: int | None
    request_timeout: float
    max_retries: int
    rpm: float | None
    tpm: float | None
    max_retry_after: float
    max_answer_bytes: int
    timeouts: Timeouts = field(default_factory=Timeouts)  # on progress; total is request_timeout
    transport: TransportName = "auto"  # the HTTP client (coevol.llm.transport)

    def samples(self, local: bool) -> int:
        """How many samples run at once: one llama.cpp worker answers one call at a time, so on
        the embedded model samples finish one by one unless the user said otherwise."""
        return self.samples_in_flight or (1 if local else self.concurrency)


@dataclass(frozen=True, slots=True)
class StopRules:
    """When a run stops early: spend, fresh failures, a judge without usable verdicts.

    ``max_budget`` (dollars) is checked after every sent call and every finished item;
    ``max_errors``: more failed items than this (replayed ones do not count) stops the run;
    ``max_unparseable``: once ``min_judged`` comparisons are in, a larger share without a usable
    verdict is a setup problem (the judge model or its prompt), not a run of kept rows.
    """

    max_budget: float | None = None
    max_errors: int | None = None
    max_unparseable: float | None = 0.5
    min_judged: int = 20


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Everything below the CLI and the API needs from the configuration, resolved once."""

    roles: Mapping[str, RolePlan]
    limits: Limits
    stops: StopRules
    loop: LoopSettings
    conversation: ConversationSettings
    prompts_dir: Path | None = None
    model_path: Path | None = None
    n_ctx: int = 4096
    n_threads: int | None = None
    embedded_model: str | None = None  # None: the 0.5B
    cache: Path | None = None
    batch_poll: float = 30.0  # seconds between polls of a batch (--batch-poll)
    judge_check: bool = False  # --judge-check: check the judge before any other call ...
    judge_check_force: bool = False  # ... and go on whatever it says

    @classmethod
    def of(cls, config: Config, *, roles: Sequence[str] | None = None) -> RunPlan:
        """Resolve the roles the run routes (default: CoEvol's five, or those the tree search
        calls; compare asks the judge alone, so no other role's server is checked and the embedded
        model is never loaded for a role nobody asks) with ``config``'s rules for keys, groups and
        fallbacks, once."""
        names = config.active_roles() if roles is None else roles
        resolved = {str(role): _role_plan(config, role) for role in names}  # plain keys: orjson writes them
        c = config
        return cls(
            roles=resolved,
            limits=Limits(
                c.concurrency,
                c.samples_in_flight,
                c.request_timeout,
                c.max_retries,
                c.rpm,
                c.tpm,
                c.max_retry_after,
                c.max_answer_bytes,
                Timeouts(c.connect_timeout, c.first_byte_timeout, c.idle_timeout, c.request_timeout),
                c.transport,
            ),
            stops=StopRules(c.max_budget, c.max_errors, c.max_unparseable, c.min_judged),
            loop=c.loop_settings(),
            conversation=c.conversation_settings(),
            prompts_dir=c.prompts_dir,
            model_path=c.model_path,
            n_ctx=c.n_ctx,
            n_threads=c.n_threads,
            embedded_model=c.embedded_model,
            cache=c.cache,
            batch_poll=c.batch_poll,
            judge_check=c.judge_check,
            judge_check_force=c.judge_check_force,
        )

    def local_roles(self) -> list[str]:
        """The roles served by the embedded model."""
        return [role for role, r in self.roles.items() if not r.servers]

    def prices(self) -> dict[str, tuple[float, float]]:
        """Dollars per million tokens (prompt, completion) of every priced role."""
        return {role: r.price for role, r in self.roles.items() if r.price is not None}

    def fingerprint_parts(self) -> list[Any]:
        """The loop settings a stored outcome depends on, as the run fingerprint has named them
        since 0.1 (the order and shape stay, so stores written before still resume)."""
        loop, conv = self.loop, self.conversation
        parts: list[Any] = [
            [loop.mode, loop.max_rounds, loop.judge, loop.judge_reasks, loop.judge_early_exit],
            {"window_rounds": conv.window_rounds, "max_turns": conv.max_turns, "max_tokens": conv.max_tokens},
        ]
        if loop.judge == "prob":  # only then, likewise: the margin decides what a prob judge keeps
            parts.append(["judge_margin", loop.judge_margin])
        if loop.tree is not None:  # only then: a CoEvol run's fingerprint (and resume) stays as it was
            parts.append(["tree", loop.tree.to_dict()])
        return parts


def _role_plan(config: Config, role: str) -> RolePlan:
    rc = config.role(role)
    endpoints, group = config.role_endpoints(role)
    assert rc.max_tokens is not None and rc.temperature is not None and rc.top_p is not None
    price = None if rc.price is None else (rc.price.prompt, rc.price.completion)
    return RolePlan(
        model=rc.model,
        servers=tuple(Server(e.base_url, e.api_key_env, e.concurrency, e.rpm) for e in endpoints),
        group=group,
        params=GenParams(
            max_tokens=rc.max_tokens,
            temperature=rc.temperature,
            top_p=rc.top_p,
            seed=rc.seed,
            # --judge prob: the judge's answers carry logprobs (asked, and so in the cache key)
            top_logprobs=JUDGE_TOP_LOGPROBS if role == "judge" and config.judge == "prob" else None,
        ),
        merge_system=bool(rc.merge_system),
        price=price,
        batch=bool(rc.batch),
    )
