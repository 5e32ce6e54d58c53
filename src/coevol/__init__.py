"""coevol: refine instruction-tuning data with debating LLM agents (CoEvol, EMNLP 2024).

The public API is what ``__all__`` lists; everything else is private and may change.
"""

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

__version__ = "0.2.0"

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
