"""Typed configuration: one model for the YAML file, the CLI and the Python API.

Unknown keys are rejected with the key's name, and the configuration round-trips to YAML
(``coevol config`` prints the effective one). Secrets are never part of it: a role names the
*environment variable* that holds its API key, never the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coevol.conversation import ConversationSettings
from coevol.domain import COEVOL_ROLES, MAX_ROUNDS, TREE_ROLES, Role
from coevol.errors import ConfigError
from coevol.llm.urls import has_userinfo, masked_url
from coevol.loop import LoopSettings, Mode
from coevol.roles.agents import JudgeKind
from coevol.roles.spar import LabelRule
from coevol.tree.settings import Algorithm, Expansion, TreeSettings, Valuation

__all__ = [
    "Config",
    "ConversationConfig",
    "EndpointConfig",
    "Price",
    "RoleConfig",
    "load_config",
]

Strategy = Literal["coevol", "tree"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
BATCH_SAMPLES = 50_000
"""Samples in flight by default with ``--batch``: a stage of that many samples is one batch round trip;
past it, rows start as earlier ones finish, so a stage can take a few batches."""


class _Strict(BaseModel):
    # hide_input_in_errors: a rejected base URL may hold a key; pydantic must not echo it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env_name(value: str | None) -> str | None:
    """The name of an environment variable, never a key pasted in by mistake (nor escape codes)."""
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "api_key_env must be the NAME of an environment variable (letters, digits and _), "
            "not the key itself"
        )
    return value


def _check_base_url(value: str | None) -> str | None:
    """Strip a trailing slash; refuse user info (the error never repeats the URL, it may hold a key)."""
    if not value:
        return value
    if has_userinfo(value):
        raise ValueError(
            "base_url must not carry a user name or password (user:pass@host); put the key in an "
            "environment variable and name it with api_key_env"
        )
    return value.strip().rstrip("/")


class EndpointConfig(_Strict):
    """One server of a group that serves the same model (``base_url`` given as a list).

    ``api_key_env`` names this server's key; left out, the group's own key is used (the key of the
    role or top level that lists the server). ``concurrency`` and ``rpm`` are this server's limits;
    without ``concurrency`` each server gets an equal share of the run's ``--concurrency``.
    """

    base_url: str
    api_key_env: str | None = None
    concurrency: int | None = Field(default=None, ge=1)
    rpm: float | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _check_base_url(value) or ""

    @field_validator("api_key_env")
    @classmethod
    def _valid_env(cls, value: str | None) -> str | None:
        return _check_env_name(value)


def _split_endpoint_list(data: Any) -> Any:
    """``base_url: [A, B]`` (or ``--base-url A --base-url B``): the list becomes ``endpoints`` and
    ``base_url`` its first server, so code that asks "is this role remote?" keeps working. A list
    of one is a plain ``base_url`` (its cache keys stay those of a single server)."""
    if not isinstance(data, dict) or not isinstance(data.get("base_url"), list):
        return data
    items = list(data["base_url"])
    data = dict(data)
    if not items:
        data.pop("base_url")
        return data
    if len(items) == 1 and not data.get("endpoint_group"):
        first = items[0]
        if isinstance(first, dict):
            data["base_url"] = first.get("base_url")
            if first.get("api_key_env") is not None:
                data["api_key_env"] = first["api_key_env"]
        else:
            data["base_url"] = first
        data.pop("endpoints", None)
        return data
    data["endpoints"] = [i if isinstance(i, dict) else {"base_url": i} for i in items]
    data.pop("base_url")
    return data


def _first_endpoint(base_url: str | None, endpoints: list[EndpointConfig]) -> str | None:
    """``base_url`` follows ``endpoints``: their first server (a different one is refused)."""
    if not endpoints:
        return base_url
    urls = [e.base_url for e in endpoints]
    if base_url is not None and base_url not in urls:
        raise ValueError("base_url must be one of the endpoints' servers (or be left out)")
    if len(set(urls)) != len(urls):
        raise ValueError("endpoints: the same server is listed twice")
    return urls[0]


class Price(_Strict):
    """US dollars per million tokens, for ``--dry-run`` estimates and ``--max-budget``."""

    prompt: float = Field(default=0.0, ge=0)
    completion: float = Field(default=0.0, ge=0)

    def halved(self) -> Price:
        """The usual Batch API price: half the online one."""
        return Price(prompt=self.prompt / 2, completion=self.completion / 2)


class RoleConfig(_Strict):
    """Per-role overrides; anything left out falls back to the top-level value."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    merge_system: bool | None = None
    price: Price | None = None
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    endpoint_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    batch: bool | None = None
    batch_price: Price | None = None

    _split = model_validator(mode="before")(_split_endpoint_list)

    @field_validator("base_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return _check_base_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _valid_env(cls, value: str | None) -> str | None:
        return _check_env_name(value)

    @model_validator(mode="after")
    def _first(self) -> RoleConfig:
        first = _first_endpoint(self.base_url, self.endpoints)
        if first != self.base_url:
            object.__setattr__(self, "base_url", first)
        return self


class ConversationConfig(_Strict):
    """Multi-turn bounds (paper Appendix B keeps the most recent 3 rounds)."""

    window_rounds: int = Field(default=3, ge=1)
    max_turns: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)


class TreeConfig(_Strict):
    """``strategy: tree``: SPaR's tree search; the defaults are SPaR's (``coevol.tree.settings``).

    ``temperature`` samples the critic's votes and the refiner's children (SPaR: 0.7) unless
    ``roles.critic`` / ``roles.refiner`` set their own. ``n``: ask for the votes in one request
    (a server that gives fewer choices is asked for the rest one by one); false for a server that
    refuses ``n``.
    """

    algorithm: Algorithm = "bfs"
    branch: int = Field(default=3, ge=1, le=16)
    keep: int = Field(default=2, ge=1, le=16)
    depth: int = Field(default=3, ge=1, le=10)
    end_gate: float = Field(default=0.5, ge=0, lt=1)
    votes: int = Field(default=5, ge=1, le=64)
    draws: int = Field(default=3, ge=1, le=10)
    tries: int = Field(default=3, ge=1, le=10)
    label: LabelRule = "strict"
    expand: Expansion = "spar"
    value: Valuation = "critic"
    n: bool = True
    temperature: float = Field(default=0.7, ge=0, le=2)

    def settings(self, seed: int | None) -> TreeSettings:
        return TreeSettings(
            algorithm=self.algorithm,
            branch=self.branch,
            keep=self.keep,
            depth=self.depth,
            end_gate=self.end_gate,
            votes=self.votes,
            draws=self.draws,
            tries=self.tries,
            label=self.label,
            expand=self.expand,
            value=self.value,
            use_n=self.n,
            seed=seed,
        )


class Config(_Strict):
    """Everything a run needs. Defaults are the paper's (Appendix B) where it gives one."""

    # Where requests go. No base_url means the embedded llama.cpp model. Several servers for the
    # same model: ``base_url: [A, B]`` (stored as ``endpoints``); ``endpoint_group`` names the group
    # in cache keys (default "pool"), so a rerun on other servers replays what was paid for.
    base_url: str | None = None
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    endpoint_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_path: Path | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    embedded_model: Literal["0.5b", "1.5b"] | None = None  # None: the 0.5B

    # Sampling (Appendix B).
    max_tokens: int = Field(default=1000, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    merge_system: bool = False
    roles: dict[Role, RoleConfig] = Field(default_factory=dict)

    # The algorithm: CoEvol's loop, or SPaR's tree search (``tree`` holds its settings).
    strategy: Strategy = "coevol"
    tree: TreeConfig | None = None
    mode: Mode = "full"
    max_rounds: int = Field(default=3, ge=1, le=MAX_ROUNDS)  # a turn records at most MAX_ROUNDS edits
    judge: JudgeKind = "verdict"
    judge_reasks: int = Field(default=2, ge=0)
    judge_early_exit: bool = False
    judge_check: bool = False  # check the judge on the built-in pairs before any refinement call
    judge_check_force: bool = False  # ... and go on whatever it says
    judge_margin: float = Field(
        default=0.0, ge=0, lt=0.5, description="--judge prob: keep an edit above 0.5 + this"
    )
    prompts_dir: Path | None = None
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)

    # Throughput and faults.
    concurrency: int = Field(default=256, ge=1, description="requests in flight")
    samples_in_flight: int | None = Field(default=None, ge=1, description="default: concurrency")
    # HTTP timeouts on progress (coevol.llm.timeouts): a connection, the first byte of an answer
    # (the server's queue and generation count here, so it is long), the longest silence once an
    # answer has begun; request_timeout caps the whole exchange (a server that drips bytes).
    connect_timeout: float = Field(default=10.0, gt=0, description="seconds to open a connection")
    first_byte_timeout: float = Field(default=600.0, gt=0, description="seconds from sending to the answer")
    idle_timeout: float = Field(default=30.0, gt=0, description="longest silence midway through an answer")
    request_timeout: float = Field(default=900.0, gt=0, description="cap on one whole exchange, s")
    # The HTTP client (coevol.llm.transport): auto is the lean one for http://, aiohttp for https://
    # and for a server the environment's HTTP_PROXY sends through a proxy.
    transport: Literal["auto", "lean", "aiohttp"] = "auto"
    max_retries: int = Field(default=6, ge=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_errors: int | None = Field(default=None, ge=0)
    max_budget: float | None = Field(default=None, gt=0)
    price: Price | None = None
    max_retry_after: float = Field(default=90.0, ge=0, description="cap on a server's Retry-After, s")
    max_answer_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="cap on one answer body")

    # The file run (engineer B: runner, store, cache). ``cache``: a call store several outputs
    # share, so refining the same input to another output pays nothing twice (opt-in). A judge
    # whose verdicts stay unparseable in more than ``max_unparseable`` of the comparisons, once
    # ``min_judged`` are in, stops the run as a setup problem (``None``: never).
    cache: Path | None = None
    # ``run_dir``: one folder for the run's side files (store, lock, trace, rejects ...), the
    # output staying where it was asked; ``true`` is ``OUTPUT.coevol``. Default: beside the output.
    run_dir: bool | Path | None = None
    max_unparseable: float | None = Field(default=0.5, ge=0, le=1)
    min_judged: int = Field(default=20, ge=1)

    # The Batch API (``--batch``): every call of a batched role goes through its server's
    # /v1/files + /v1/batches, polled every ``batch_poll`` seconds. ``batch_price`` defaults to half
    # the online price. Samples in flight default to ``BATCH_SAMPLES`` so a stage is one batch.
    batch: bool = False
    batch_poll: float = Field(default=30.0, gt=0, description="seconds between polls of a batch")
    batch_price: Price | None = None

    _split = model_validator(mode="before")(_split_endpoint_list)

    @field_validator("base_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        return _check_base_url(value)

    @field_validator("api_key_env")
    @classmethod
    def _valid_env(cls, value: str) -> str:
        _check_env_name(value)
        return value

    @model_validator(mode="after")
    def _first(self) -> Config:
        first = _first_endpoint(self.base_url, self.endpoints)
        if first != self.base_url:
            object.__setattr__(self, "base_url", first)
        return self

    @model_validator(mode="after")
    def _tree_runs_whole(self) -> Config:
        if self.strategy == "tree" and self.mode != "full":
            raise ValueError("strategy tree searches on its own: --mode ablations are for strategy coevol")
        if self.strategy != "tree" and self.tree is not None:  # a --tree-* flag would do nothing
            raise ValueError("tree settings (--tree-*, tree:) apply only with --strategy tree")
        return self

    @model_validator(mode="after")
    def _batch_samples(self) -> Config:
        if self.samples_in_flight is None and self.batched_roles():
            object.__setattr__(self, "samples_in_flight", BATCH_SAMPLES)
        return self

    def batched_roles(self) -> list[Role]:
        """The roles whose calls go through the Batch API."""
        return [r for r in COEVOL_ROLES if self._batched(self.roles.get(r))]

    def _batched(self, own: RoleConfig | None) -> bool:
        return self.batch if own is None or own.batch is None else own.batch

    @model_validator(mode="after")
    def _budget_needs_a_price(self) -> Config:
        priced = self.price is not None or any(r.price is not None for r in self.roles.values())
        if self.max_budget is not None and not priced:
            raise ValueError(
                "--max-budget needs prices to count spend: give --price-prompt/--price-completion "
                "(dollars per million tokens) or price: in the config"
            )
        return self

    def role(self, name: Role | str) -> RoleConfig:
        """The role's settings with every gap filled from the top level.

        A role sent to a different server than the top-level one gets a key only from its own
        ``api_key_env``: the top-level key belongs to the top-level server and must never be sent
        to another (possibly third-party) one.
        """
        own = self.roles.get(Role(name), RoleConfig())
        same_server = own.base_url is None or own.base_url == self.base_url
        temperature = self.temperature
        if name in TREE_ROLES:  # SPaR samples its critiques and children
            temperature = (self.tree or TreeConfig()).temperature
        return RoleConfig(
            model=own.model or self.model,
            base_url=own.base_url or self.base_url,
            api_key_env=own.api_key_env or (self.api_key_env if same_server else None),
            max_tokens=own.max_tokens or self.max_tokens,
            temperature=temperature if own.temperature is None else own.temperature,
            top_p=own.top_p or self.top_p,
            seed=self.seed if own.seed is None else own.seed,
            merge_system=self.merge_system if own.merge_system is None else own.merge_system,
            price=self._price(own),
            batch=self._batched(own),
        )

    def _price(self, own: RoleConfig) -> Price | None:
        """What a role's calls cost: the batch price when it is batched (default: half online)."""
        online = own.price or self.price
        if not self._batched(own):
            return online
        return own.batch_price or self.batch_price or (online.halved() if online is not None else None)

    def online_price(self, name: Role | str) -> Price | None:
        """What a role's calls would cost online (the summary's comparison for a batched run)."""
        own = self.roles.get(Role(name), RoleConfig())
        return own.price or self.price

    def role_endpoints(self, name: Role | str) -> tuple[list[EndpointConfig], str | None]:
        """The servers of a role (``[]``: the embedded model) with each one's key variable, and the
        group's name when it is a group (several servers or a named one).

        A server gets the key of the entry, else that of whoever listed it (the role, or the top
        level); the top-level key goes only to the top-level servers, never to a role's own ones.
        """
        own = self.roles.get(Role(name), RoleConfig())
        top = self.endpoints or (
            [EndpointConfig(base_url=self.base_url)] if self.base_url is not None else []
        )
        top_urls = {e.base_url for e in top}
        group: str | None
        if own.endpoints:
            listed, group = own.endpoints, own.endpoint_group or "pool"
        elif own.base_url is not None and own.base_url != self.base_url:
            listed, group = [EndpointConfig(base_url=own.base_url)], own.endpoint_group
        else:
            listed = top
            group = own.endpoint_group or self.endpoint_group or ("pool" if self.endpoints else None)
        fallback = own.api_key_env
        out = []
        for e in listed:
            env = e.api_key_env or fallback or (self.api_key_env if e.base_url in top_urls else None)
            out.append(e.model_copy(update={"api_key_env": env}))
        return out, group

    def active_roles(self) -> tuple[Role, ...]:
        """The roles a run routes: CoEvol's five; for the tree, the ones its search calls."""
        if self.strategy != "tree":
            return COEVOL_ROLES
        tree = self.tree or TreeConfig()
        used = set(TREE_ROLES) if tree.expand == "spar" else {"positive", "critical", "advisor", "editor"}
        used |= {"critic"} if tree.value == "critic" else {"judge"}
        return tuple(r for r in COEVOL_ROLES + TREE_ROLES if r in used)

    def tree_settings(self) -> TreeSettings | None:
        """The tree search this config asks for, or None for CoEvol's loop."""
        if self.strategy != "tree":
            return None
        return (self.tree or TreeConfig()).settings(self.seed)

    def loop_settings(self) -> LoopSettings:
        """The knobs of Algorithm 1 (or of the tree search) this config sets."""
        return LoopSettings(
            max_rounds=self.max_rounds,
            mode=self.mode,
            judge=self.judge,
            judge_reasks=self.judge_reasks,
            judge_early_exit=self.judge_early_exit,
            tree=self.tree_settings(),
            judge_margin=self.judge_margin,
        )

    def conversation_settings(self) -> ConversationSettings:
        """The multi-turn bounds this config sets."""
        conv = self.conversation
        return ConversationSettings(conv.window_rounds, conv.max_turns, conv.max_tokens)

    def to_yaml(self) -> str:
        """The config as YAML, with every secret in a base URL masked (``?api-key=***``)."""
        data = self.model_dump(mode="json", exclude_none=True)
        for part in [data, *data.get("roles", {}).values()]:
            if "base_url" in part:
                part["base_url"] = masked_url(part["base_url"])
            for endpoint in part.get("endpoints", []):
                endpoint["base_url"] = masked_url(endpoint["base_url"])
            if not part.get("endpoints"):
                part.pop("endpoints", None)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<config>") -> Config:
        return cls.from_mapping(_parse_yaml(text, source), source=source)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<config>") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, source)) from None

    def prices(self, *, online: bool = False) -> dict[str, tuple[float, float]] | None:
        """Each priced role's dollars per million (prompt, completion) tokens; None when no role
        has a price (the live cost, the report's cost and the dry run's expected figure read it).
        A batched role's are its batch prices; ``online``: what the same calls would cost online."""
        found: dict[str, tuple[float, float]] = {}
        for role in Role:
            price = self.online_price(role) if online else self.role(role).price
            if price is not None:
                found[role.value] = (price.prompt, price.completion)
        return found or None

    def api_key(self, role: Role | str) -> str | None:
        """Read the role's key from its environment variable; never stored in the config."""
        env = self.role(role).api_key_env
        return os.environ.get(env) if env else None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if not where:  # a rule across several settings: its message names them
            lines.append("  " + err["msg"].removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            lines.append(f"  unknown key {where!r}")
        elif err["loc"] and err["loc"][-1] == "[key]":  # a mapping key outside its allowed set (roles)
            key = ".".join(str(p) for p in err["loc"][:-1])
            lines.append(f"  unknown key {key!r}: {err['msg']}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


MAX_CONFIG_BYTES = 1 << 20
"""A configuration is a page of settings; a file past this is refused before it is parsed."""
MAX_CONFIG_NODES = 100_000
"""Values in the document once every alias is expanded: bounds a "billion laughs" file."""


def _expanded(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for with its aliases expanded (each shared node counted
    once per use), in time linear in the document."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a node that refers to itself counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded(k, memo) + _expanded(v, memo) for k, v in node.value)
    memo[key] = total
    return total


def _parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` with every way it fails (syntax, hostile nesting, aliases that expand past
    ``MAX_CONFIG_NODES``) as a ``ConfigError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        if _expanded(node, {}) > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{source}: refusing a configuration whose aliases expand past {MAX_CONFIG_NODES:,} "
                "values (a YAML alias bomb?)"
            )
        return loader.construct_document(node) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        if path.exists():  # a folder, a FIFO (would hang), a device such as /dev/zero (endless)
            raise ConfigError(f"{path}: a configuration must be a regular file")
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: a configuration file larger than {MAX_CONFIG_BYTES >> 20} MiB is refused "
            "(is it the right file?)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    loaded = _parse_yaml(text, str(path))
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return dict(loaded)


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> Config:
    """The file's settings (if any) with CLI overrides applied on top; both validated."""
    data: dict[str, Any] = {}
    flags = any(value is not None for value in (overrides or {}).values())
    source = "the command-line flags"
    if path is not None:
        source = f"{path} with the command-line flags" if flags else str(path)
        data = _read_config_file(Path(path))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.from_mapping(data, source=source)
