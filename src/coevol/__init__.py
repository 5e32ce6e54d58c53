"""coevol: refine instruction-tuning data with debating LLM agents (CoEvol, EMNLP 2024).

The public API is what ``__all__`` lists; everything else is private and may change. Its names are
imported on first use, so ``import coevol`` (and the ``coevol`` command's first instant, when its
signal handlers are installed) stays cheap.
"""

import importlib

TYPE_CHECKING = False  # not typing's: importing typing alone costs tens of milliseconds at start-up
if TYPE_CHECKING:
    from coevol.api import FileRun, Result, arefine, arefine_file, refine, refine_file
    from coevol.config import Config, ConversationConfig, Price, RoleConfig, load_config
    from coevol.domain import Status, StopReason, TraceRecord
    from coevol.errors import (
        APIConnectionError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BudgetExceeded,
        CoevolError,
        ConfigError,
        ContextLengthError,
        DataError,
        FatalError,
        LLMError,
        MissingExtra,
        ModelAssetError,
        NoSpace,
        NotFoundError,
        OutputError,
        ParseError,
        RateLimitError,
        ResponseTooLarge,
        RetryableError,
        ServerError,
        StoreError,
        TraceError,
        TraceSchemaError,
    )
    from coevol.llm.types import ChatRequest, Completion, Generate, GenParams
    from coevol.loop import LoopSettings, Refinement, coevolve
    from coevol.prompts.render import Sample
    from coevol.prompts.templates import PromptSet, load_prompts

__version__ = "0.3.0"

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ChatRequest",
    "CoevolError",
    "Completion",
    "Config",
    "ConfigError",
    "ContextLengthError",
    "ConversationConfig",
    "DataError",
    "FatalError",
    "FileRun",
    "GenParams",
    "Generate",
    "LLMError",
    "LoopSettings",
    "MissingExtra",
    "ModelAssetError",
    "NoSpace",
    "NotFoundError",
    "OutputError",
    "ParseError",
    "Price",
    "PromptSet",
    "RateLimitError",
    "Refinement",
    "ResponseTooLarge",
    "Result",
    "RetryableError",
    "RoleConfig",
    "Sample",
    "ServerError",
    "Status",
    "StopReason",
    "StoreError",
    "TraceError",
    "TraceRecord",
    "TraceSchemaError",
    "__version__",
    "arefine",
    "arefine_file",
    "coevolve",
    "load_config",
    "load_prompts",
    "refine",
    "refine_file",
]

_LAZY: dict[str, str] = {
    "FileRun": "coevol.api",
    "Result": "coevol.api",
    "arefine": "coevol.api",
    "arefine_file": "coevol.api",
    "refine": "coevol.api",
    "refine_file": "coevol.api",
    "Config": "coevol.config",
    "ConversationConfig": "coevol.config",
    "Price": "coevol.config",
    "RoleConfig": "coevol.config",
    "load_config": "coevol.config",
    "Status": "coevol.domain",
    "StopReason": "coevol.domain",
    "TraceRecord": "coevol.domain",
    "APIConnectionError": "coevol.errors",
    "APITimeoutError": "coevol.errors",
    "AuthenticationError": "coevol.errors",
    "BadRequestError": "coevol.errors",
    "BudgetExceeded": "coevol.errors",
    "CoevolError": "coevol.errors",
    "ConfigError": "coevol.errors",
    "ContextLengthError": "coevol.errors",
    "DataError": "coevol.errors",
    "FatalError": "coevol.errors",
    "LLMError": "coevol.errors",
    "MissingExtra": "coevol.errors",
    "ModelAssetError": "coevol.errors",
    "NoSpace": "coevol.errors",
    "NotFoundError": "coevol.errors",
    "OutputError": "coevol.errors",
    "ParseError": "coevol.errors",
    "RateLimitError": "coevol.errors",
    "ResponseTooLarge": "coevol.errors",
    "RetryableError": "coevol.errors",
    "ServerError": "coevol.errors",
    "StoreError": "coevol.errors",
    "TraceError": "coevol.errors",
    "TraceSchemaError": "coevol.errors",
    "ChatRequest": "coevol.llm.types",
    "Completion": "coevol.llm.types",
    "Generate": "coevol.llm.types",
    "GenParams": "coevol.llm.types",
    "LoopSettings": "coevol.loop",
    "Refinement": "coevol.loop",
    "coevolve": "coevol.loop",
    "Sample": "coevol.prompts.render",
    "PromptSet": "coevol.prompts.templates",
    "load_prompts": "coevol.prompts.templates",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coevol' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
