"""coevol: refine instruction-tuning data with debating LLM agents (CoEvol, EMNLP 2024).

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from coevol.api import FileRun, Result, arefine, arefine_file, refine, refine_file
from coevol.config import Config, ConversationConfig, Price, RoleConfig, load_config
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
    NotFoundError,
    ParseError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from coevol.llm.types import ChatRequest, Completion, Generate, GenParams
from coevol.loop import LoopSettings, Refinement, coevolve
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet, load_prompts

__version__ = "0.1.0"

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
    "NotFoundError",
    "ParseError",
    "Price",
    "PromptSet",
    "RateLimitError",
    "Refinement",
    "Result",
    "RetryableError",
    "RoleConfig",
    "Sample",
    "ServerError",
    "__version__",
    "arefine",
    "arefine_file",
    "coevolve",
    "load_config",
    "load_prompts",
    "refine",
    "refine_file",
]
