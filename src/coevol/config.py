"""Typed configuration: one model for the YAML file, the CLI and the Python API.

Unknown keys are rejected with the key's name, and the configuration round-trips to YAML
(``coevol config`` prints the effective one). Secrets are never part of it: a role names the
*environment variable* that holds its API key, never the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coevol.conversation import ConversationSettings
from coevol.errors import ConfigError
from coevol.loop import LoopSettings

__all__ = ["ROLES", "Config", "ConversationConfig", "Price", "RoleConfig", "load_config"]

ROLES: tuple[str, ...] = ("positive", "critical", "advisor", "editor", "judge")
RoleName = Literal["positive", "critical", "advisor", "editor", "judge"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Price(_Strict):
    """US dollars per million tokens, for ``--dry-run`` estimates and ``--max-budget``."""

    prompt: float = Field(default=0.0, ge=0)
    completion: float = Field(default=0.0, ge=0)


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


class ConversationConfig(_Strict):
    """Multi-turn bounds (paper Appendix B keeps the most recent 3 rounds)."""

    window_rounds: int = Field(default=3, ge=1)
    max_turns: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)


class Config(_Strict):
    """Everything a run needs. Defaults are the paper's (Appendix B) where it gives one."""

    # Where requests go. No base_url means the embedded llama.cpp model.
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model_path: Path | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)

    # Sampling (Appendix B).
    max_tokens: int = Field(default=1000, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    merge_system: bool = False
    roles: dict[RoleName, RoleConfig] = Field(default_factory=dict)

    # The algorithm.
    mode: Literal["full", "debate", "advise", "advise-noresp", "edit"] = "full"
    max_rounds: int = Field(default=3, ge=1)
    judge: Literal["verdict", "score"] = "verdict"
    judge_reasks: int = Field(default=2, ge=0)
    judge_early_exit: bool = False
    prompts_dir: Path | None = None
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)

    # Throughput and faults.
    concurrency: int = Field(default=256, ge=1, description="requests in flight")
    samples_in_flight: int | None = Field(default=None, ge=1, description="default: concurrency")
    request_timeout: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_errors: int | None = Field(default=None, ge=0)
    max_budget: float | None = Field(default=None, gt=0)
    price: Price | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    def role(self, name: str) -> RoleConfig:
        """The role's settings with every gap filled from the top level."""
        own = self.roles.get(name, RoleConfig())  # type: ignore[call-overload]
        return RoleConfig(
            model=own.model or self.model,
            base_url=own.base_url or self.base_url,
            api_key_env=own.api_key_env or self.api_key_env,
            max_tokens=own.max_tokens or self.max_tokens,
            temperature=self.temperature if own.temperature is None else own.temperature,
            top_p=own.top_p or self.top_p,
            seed=self.seed if own.seed is None else own.seed,
            merge_system=self.merge_system if own.merge_system is None else own.merge_system,
            price=own.price or self.price,
        )

    def loop_settings(self) -> LoopSettings:
        """The knobs of Algorithm 1 this config sets."""
        return LoopSettings(
            max_rounds=self.max_rounds,
            mode=self.mode,
            judge=self.judge,
            judge_reasks=self.judge_reasks,
            judge_early_exit=self.judge_early_exit,
        )

    def conversation_settings(self) -> ConversationSettings:
        """The multi-turn bounds this config sets."""
        conv = self.conversation
        return ConversationSettings(conv.window_rounds, conv.max_turns, conv.max_tokens)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<config>") -> Config:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<config>") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, source)) from None

    def api_key(self, role: str) -> str | None:
        """Read the role's key from its environment variable; never stored in the config."""
        env = self.role(role).api_key_env
        return os.environ.get(env) if env else None


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key {where!r}")
        elif err["loc"] and err["loc"][-1] == "[key]":  # a mapping key outside its allowed set (roles)
            key = ".".join(str(p) for p in err["loc"][:-1])
            lines.append(f"  unknown key {key!r}: {err['msg']}")
        else:
            lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> Config:
    """The file's settings (if any) with CLI overrides applied on top; both validated."""
    data: dict[str, Any] = {}
    source = "<flags>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        source = str(p)
        loaded = yaml.safe_load(p.read_text("utf-8")) if p.stat().st_size else {}
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data = dict(loaded or {})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.from_mapping(data, source=source)
