"""Token log-probabilities in the OpenAI chat shape, read and written. Pure: no I/O.

vLLM, llama.cpp's server and llama-cpp-python all answer a chat request that sets ``logprobs``
with ``choices[0].logprobs.content[i] = {token, logprob, top_logprobs: [{token, logprob}]}``.
A server that ignores the field answers without it (or with ``null``): that is ``None`` here, so
the caller can refuse it in words instead of guessing.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import orjson

from coevol.llm.types import TokenLogprob

__all__ = ["logprobs_from_json", "logprobs_to_json", "parse_chat_logprobs"]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy's float32 too (llama.cpp)
        raise ValueError(f"a logprob must be a number, found {type(value).__name__}")
    number = float(value)
    if math.isnan(number) or number > 0:
        raise ValueError(f"a logprob must be <= 0, found {value!r}")
    return number


def _token(entry: Any) -> tuple[str, float]:
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        raise ValueError("a logprob entry must be an object with a string 'token'")
    return entry["token"], _number(entry.get("logprob"))


def parse_chat_logprobs(value: Any) -> tuple[TokenLogprob, ...] | None:
    """``choices[0].logprobs`` as tokens; ``None`` when the server sent none.

    Raises ``ValueError`` for a shape that is present but wrong (the caller reports the answer as
    malformed): a token without text, a logprob that is not a number or is positive.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("'logprobs' must be an object")
    content = value.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise ValueError("'logprobs.content' must be a list")
    tokens: list[TokenLogprob] = []
    for entry in content:
        token, logprob = _token(entry)
        top = entry.get("top_logprobs") or []
        if not isinstance(top, list):
            raise ValueError("'top_logprobs' must be a list")
        tokens.append(TokenLogprob(token, logprob, tuple(_token(t) for t in top)))
    return tuple(tokens)


def logprobs_to_json(tokens: tuple[TokenLogprob, ...] | None) -> str | None:
    """Compact JSON for the store: ``[[token, logprob, [[alt, logprob], ...]], ...]``."""
    if tokens is None:
        return None
    return orjson.dumps([[t.token, t.logprob, [list(a) for a in t.top]] for t in tokens]).decode()


def logprobs_from_json(text: str | None) -> tuple[TokenLogprob, ...] | None:
    """The inverse of ``logprobs_to_json``; ``ValueError`` for text it did not write."""
    if text is None:
        return None
    try:
        rows = orjson.loads(text)
        return tuple(
            TokenLogprob(str(token), float(logprob), tuple((str(a), float(lp)) for a, lp in top))
            for token, logprob, top in rows
        )
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"stored logprobs are not readable: {exc}") from None
