"""The public API is exactly what ``coevol.__all__`` lists: a change to it is a decision, not an accident."""

from __future__ import annotations

import coevol

PUBLIC = [
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
    "NoSpace",
    "OutputError",
    "ResponseTooLarge",
    "StoreError",
    "TraceError",
    "TraceSchemaError",
    "Status",
    "StopReason",
    "TraceRecord",
]


def test_all_is_pinned() -> None:
    assert sorted(coevol.__all__) == sorted(PUBLIC)
    assert len(set(coevol.__all__)) == len(coevol.__all__)


def test_every_public_name_resolves_and_star_import_gives_exactly_them() -> None:
    for name in coevol.__all__:
        assert getattr(coevol, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from coevol import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_exported_errors_are_the_documented_tree() -> None:
    for name in coevol.__all__:
        obj = getattr(coevol, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, coevol.CoevolError), name
            assert obj is getattr(coevol.errors, name)


def test_the_names_0_2_code_used_still_work() -> None:
    """Renamed for one word per thing (issue 19), kept as aliases so code written against 0.2 runs."""
    from coevol.api import Result
    from coevol.domain import StopReason
    from coevol.loop import Refinement

    alias: object = StopReason.REJECTED  # mypy takes the two members for distinct literals
    assert alias is StopReason.TURNED_DOWN and StopReason("rejected") is StopReason.TURNED_DOWN
    assert [s.value for s in StopReason].count("rejected") == 1  # an alias, not a second member
    assert Result(None, "kept", 2, {}).accepted_rounds == 2
    assert Refinement("r", 1, StopReason.MAX_ROUNDS, []).accepted_rounds == 1
