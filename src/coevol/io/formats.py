"""SFT row formats (alpaca, sharegpt, messages): detection, parsing into turns, rendering back.

Pure functions, no file I/O. Parsing is strict (a row that would give the agents nothing sound to work on
is a ``DataError``, reported as a rejected row); rendering in the source format touches nothing but the
assistant texts, so ids, extra fields and key order survive a refinement run.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from coevol.domain import NO_INPUT_PLACEHOLDERS, Example, Turn
from coevol.errors import ConfigError, DataError

__all__ = [
    "ALPACA",
    "FORMATS",
    "MESSAGES",
    "SHAREGPT",
    "TOOL_CALL_ROLE",
    "dataset_info_entry",
    "detect_format",
    "parse_example",
    "render_example",
    "with_input",
]

ALPACA = "alpaca"
SHAREGPT = "sharegpt"
MESSAGES = "messages"
FORMATS: tuple[str, ...] = (ALPACA, SHAREGPT, MESSAGES)

_ALPACA_KEYS = ("instruction", "input", "output", "system", "history")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}
_SOURCE_KEYS = {
    ALPACA: frozenset(_ALPACA_KEYS),
    SHAREGPT: frozenset({"conversations", "system"}),
    MESSAGES: frozenset({"messages"}),
}
_SHAREGPT_TAGS = {"user": "human", "assistant": "gpt", "system": "system"}
TOOL_CALL_ROLE = "function_call"
"""The role of an assistant message that calls tools (``tool_calls`` / ``function_call`` in the messages
format): LLaMA-Factory's name for such a turn, as ShareGPT data spells it. It is context, never refined."""
_MAX_KEYS_SHOWN = 12


def _jtype(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _text(obj: dict[str, Any], key: str, path: str, line: int) -> str:
    """A required text field; the message names the field by its JSON path."""
    if key not in obj:
        raise DataError(f"missing field '{path}'", line=line)
    value = obj[key]
    if value is None:
        raise DataError(f"field '{path}' is null", line=line)
    if not isinstance(value, str):
        raise DataError(f"field '{path}' has non-text content ({_jtype(value)})", line=line)
    return value


def _optional_text(obj: dict[str, Any], key: str, line: int) -> str:
    """A text field that may be missing or null (then ``""``)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"field '{key}' has non-text content ({_jtype(value)})", line=line)
    return value


def _list(obj: dict[str, Any], key: str, line: int) -> list[Any]:
    if key not in obj:
        raise DataError(f"missing field '{key}'", line=line)
    value = obj[key]
    if value is None:
        raise DataError(f"field '{key}' is null", line=line)
    if not isinstance(value, list):
        raise DataError(f"field '{key}' is not a list ({_jtype(value)})", line=line)
    if not value:
        raise DataError(f"field '{key}' is empty", line=line)
    return value


def _blank(text: str) -> bool:
    return not text or text.isspace()


def detect_format(obj: Any) -> str | None:
    """The format a row looks like, from its keys alone (``None`` when none fits).

    Detection is by key presence, not validity, so a broken row of a known format gets an error that says
    what is broken rather than "matches no known format".
    """
    if not isinstance(obj, dict):
        return None
    if "conversations" in obj:
        return SHAREGPT
    if "messages" in obj:
        return MESSAGES
    if "instruction" in obj or "output" in obj:
        return ALPACA
    return None


def parse_example(obj: Any, fmt: str | None, *, index: int, line: int) -> Example:
    """Parses one row into an ``Example``; ``fmt=None`` detects the format. Raises ``DataError``."""
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise DataError(f"row is not a JSON object ({_jtype(obj)})", line=line)
    found = detect_format(obj)
    if fmt is None:
        if found is None:
            keys = [repr(k) for k in list(obj)[:_MAX_KEYS_SHOWN]]
            if len(obj) > _MAX_KEYS_SHOWN:
                keys.append("...")
            raise DataError(
                f"row matches no known format ({', '.join(FORMATS)}): has keys [{', '.join(keys)}]",
                line=line,
            )
        fmt = found
    elif found is not None and found != fmt:
        raise DataError(f"row is in {found} format, expected {fmt}", line=line)
    if fmt == ALPACA:
        turns = _parse_alpaca(obj, line)
    elif fmt == SHAREGPT:
        turns = _parse_conversation(obj, "conversations", "from", "value", _sharegpt_system(obj, line), line)
    else:
        turns = _parse_conversation(obj, "messages", "role", "content", None, line)
    return Example(index=index, line=line, fmt=fmt, turns=turns, raw=obj)


def _parse_alpaca(obj: dict[str, Any], line: int) -> list[Turn]:
    instruction = _text(obj, "instruction", "instruction", line)
    if _blank(instruction):
        raise DataError("empty instruction", line=line)
    output = _text(obj, "output", "output", line)
    if _blank(output):
        raise DataError("empty output", line=line)
    system = _optional_text(obj, "system", line)
    last = [Turn("user", instruction, _optional_text(obj, "input", line)), Turn("assistant", output)]
    if _blank(system) and obj.get("history") is None:
        return last
    turns = [] if _blank(system) else [Turn("system", system)]
    for i, (query, response) in enumerate(_history(obj, line)):
        if _blank(query):
            raise DataError(f"empty user turn at history[{i}][0]", line=line)
        if _blank(response):
            raise DataError(f"empty assistant turn at history[{i}][1]", line=line)
        turns += [Turn("user", query), Turn("assistant", response)]
    return turns + last


def _history(obj: dict[str, Any], line: int) -> list[tuple[str, str]]:
    """LLaMA-Factory's ``history``: earlier ``[query, response]`` pairs, oldest first."""
    history = obj.get("history")
    if history is None:
        return []
    if not isinstance(history, list):
        raise DataError(f"field 'history' is not a list ({_jtype(history)})", line=line)
    pairs = []
    for i, pair in enumerate(history):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise DataError(f"field 'history[{i}]' is not a [query, response] pair", line=line)
        texts = []
        for j, value in enumerate(pair):
            if value is None:
                raise DataError(f"field 'history[{i}][{j}]' is null", line=line)
            if not isinstance(value, str):
                raise DataError(
                    f"field 'history[{i}][{j}]' has non-text content ({_jtype(value)})", line=line
                )
            texts.append(value)
        pairs.append((texts[0], texts[1]))
    return pairs


def _sharegpt_system(obj: dict[str, Any], line: int) -> str | None:
    """LLaMA-Factory's top-level ``system`` column of a sharegpt row, when it holds a prompt."""
    system = _optional_text(obj, "system", line)
    return None if _blank(system) else system


def _parse_conversation(
    obj: dict[str, Any], key: str, role_key: str, content_key: str, system: str | None, line: int
) -> list[Turn]:
    turns = [] if system is None else [Turn("system", system)]
    for i, message in enumerate(_list(obj, key, line)):
        path = f"{key}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"field '{path}' is not an object ({_jtype(message)})", line=line)
        if role_key not in message:
            raise DataError(f"missing field '{path}.{role_key}'", line=line)
        role = message[role_key]
        if not isinstance(role, str):
            raise DataError(f"field '{path}.{role_key}' is not a string ({_jtype(role)})", line=line)
        if key == "conversations":
            role = _SHAREGPT_ROLES.get(role.lower(), role)
        elif role == "assistant" and _calls_tools(message):
            turns.append(Turn(TOOL_CALL_ROLE, _tool_call_text(message, path, line)))
            continue
        content = _text(message, content_key, f"{path}.{content_key}", line)
        if role in ("user", "assistant") and _blank(content):
            raise DataError(f"empty {role} turn at {path}", line=line)
        turns.append(Turn(role, content))
    roles = {t.role for t in turns}
    if "assistant" not in roles:
        raise DataError("conversation has no assistant turn", line=line)
    if "user" not in roles:
        raise DataError("conversation has no user turn", line=line)
    return turns


def _calls_tools(message: dict[str, Any]) -> bool:
    """An OpenAI/TRL assistant message that calls tools (its ``content`` is often null or absent).

    An empty ``tool_calls`` list, as some exporters write on every message, calls nothing.
    """
    return bool(message.get("tool_calls")) or bool(message.get("function_call"))


def _tool_call_text(message: dict[str, Any], path: str, line: int) -> str:
    """What the agents see of a tool-calling turn: its text, if any, then the calls as JSON."""
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise DataError(f"field '{path}.content' has non-text content ({_jtype(content)})", line=line)
    if message.get("tool_calls"):
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise DataError(f"field '{path}.tool_calls' is not a list ({_jtype(calls)})", line=line)
    else:
        calls = [message["function_call"]]
    functions = [c["function"] if isinstance(c, dict) and "function" in c else c for c in calls]
    shown = orjson.dumps(functions[0] if len(functions) == 1 else functions, default=str).decode()
    return shown if content is None or _blank(content) else f"{content}\n{shown}"


def render_example(ex: Example, turns: list[Turn], out_fmt: str | None = None) -> dict[str, Any]:
    """The row to write for ``ex`` with the (refined) ``turns``.

    In the source format this is a copy of ``ex.raw`` with only the assistant texts replaced, so nothing
    else changes. Converting builds the target shape in place of the source's format keys and keeps the
    other top-level fields where they were; it raises ``DataError`` when the target cannot hold the
    conversation (alpaca has no place for tool turns or for two user turns in a row).
    """
    if out_fmt is not None and out_fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {out_fmt!r}; expected one of {', '.join(FORMATS)}")
    if out_fmt is None or out_fmt == ex.fmt:
        if [t.role for t in turns] != [t.role for t in ex.turns]:
            raise ValueError(f"turns of row {ex.line} do not match the example's roles")
        if ex.fmt == ALPACA:
            return _replace_alpaca(ex, turns)
        if ex.fmt == SHAREGPT:
            offset = 0 if _sharegpt_system(ex.raw, ex.line) is None else 1
            return _replace_conversation(ex.raw, turns[offset:], "conversations", "value")
        return _replace_conversation(ex.raw, turns, "messages", "content")
    if out_fmt == ALPACA:
        body = _to_alpaca(turns, ex.line)
    elif out_fmt == SHAREGPT:
        body = {
            "conversations": [
                {"from": _SHAREGPT_TAGS.get(t.role, t.role), "value": with_input(t)} for t in turns
            ]
        }
    else:
        body = {"messages": [{"role": t.role, "content": with_input(t)} for t in turns]}
    source_keys = _SOURCE_KEYS[ex.fmt]
    out: dict[str, Any] = {}
    for key, value in ex.raw.items():
        if key in source_keys:
            out.update(body)
        elif key not in body:
            out[key] = value
    out.update(body)
    return out


def _replace_alpaca(ex: Example, turns: list[Turn]) -> dict[str, Any]:
    out = dict(ex.raw)
    out["output"] = turns[-1].content
    offset = 1 if turns[0].role == "system" else 0
    answers = [t.content for t in turns[offset:-2] if t.role == "assistant"]
    if answers:
        out["history"] = [[pair[0], answer] for pair, answer in zip(ex.raw["history"], answers, strict=True)]
    return out


def _replace_conversation(
    raw: dict[str, Any], turns: list[Turn], key: str, content_key: str
) -> dict[str, Any]:
    out = dict(raw)
    messages = [dict(m) for m in raw[key]]
    for message, turn in zip(messages, turns, strict=True):
        if turn.role == "assistant":
            message[content_key] = turn.content
    out[key] = messages
    return out


def with_input(turn: Turn) -> str:
    """The text with alpaca's ``input`` folded in, joined by a newline as LLaMA-Factory does.

    A placeholder such as ``<noinput>`` means the sample has no input (as the prompts treat it), so it is
    not folded into the message.
    """
    if turn.input.strip().lower() in NO_INPUT_PLACEHOLDERS:
        return turn.content
    return f"{turn.content}\n{turn.input}"


def _to_alpaca(turns: list[Turn], line: int) -> dict[str, Any]:
    systems = [t.content for t in turns if t.role == "system"]
    rest = [t for t in turns if t.role != "system"]
    for t in rest:
        if t.role not in ("user", "assistant"):
            raise DataError(f"cannot convert to alpaca: it has no place for '{t.role}' turns", line=line)
    expected = ["user", "assistant"] * (len(rest) // 2)
    if not rest or [t.role for t in rest] != expected:
        raise DataError(
            "cannot convert to alpaca: turns must alternate user/assistant, starting with user "
            "and ending with assistant",
            line=line,
        )
    last_user, last_assistant = rest[-2], rest[-1]
    body: dict[str, Any] = {
        "instruction": last_user.content,
        "input": last_user.input,
        "output": last_assistant.content,
    }
    if systems:
        body["system"] = "\n\n".join(systems)
    if len(rest) > 2:
        body["history"] = [[with_input(q), a.content] for q, a in zip(rest[:-2:2], rest[1:-2:2], strict=True)]
    return body


def dataset_info_entry(
    name: str, file_name: str, fmt: str, *, present: Collection[str] | None = None
) -> dict[str, Any]:
    """``{name: entry}`` for LLaMA-Factory's ``dataset_info.json``, describing a file written by coevol.

    ``present`` lists the column names the written file has; when given, optional columns it lacks are
    left out, since LLaMA-Factory looks up every column it is told about.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")

    def keep(column: str) -> bool:
        return present is None or column in present

    entry: dict[str, Any] = {"file_name": file_name}
    if fmt == ALPACA:
        entry["formatting"] = "alpaca"
        columns = {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "system": "system",
            "history": "history",
        }
        entry["columns"] = {k: v for k, v in columns.items() if k in ("prompt", "response") or keep(v)}
        return {name: entry}
    messages_key = "conversations" if fmt == SHAREGPT else "messages"
    entry["formatting"] = "sharegpt"
    entry["columns"] = {"messages": messages_key}
    if present is not None:
        entry["columns"] |= {k: k for k in ("system", "tools") if k in present}
    if fmt == SHAREGPT:
        tags = ("from", "value", "human", "gpt", "system")
    else:
        tags = ("role", "content", "user", "assistant", "system")
    entry["tags"] = dict(
        zip(("role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag"), tags, strict=True)
    )
    return {name: entry}
