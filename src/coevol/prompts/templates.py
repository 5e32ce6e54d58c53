"""Load the prompt templates: the paper's texts ship as files, and a user folder may override any.

A template is plain text with ``{name}`` slots. Lines starting with ``#:`` are comments (attribution,
notes) and are never sent. Substitution touches only the slots a template declares, so user text
containing braces (code, JSON) passes through unchanged. ``PromptSet.render`` also keeps data from
forging the template's markers (``coevol.prompts.guard``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from coevol.errors import ConfigError
from coevol.prompts.guard import boundaries, neutralise

__all__ = ["TEMPLATE_NAMES", "PromptSet", "Rendered", "compose", "fill", "load_prompts"]

TEMPLATE_NAMES: tuple[str, ...] = (
    "sample_with_input",
    "sample_without_input",
    "request_with_input",
    "request_without_input",
    "positive_system",
    "critical_system",
    "advisor_system",
    "editor_system",
    "judge_system",
    "positive_round1",
    "critical_round1",
    "positive_round2",
    "critical_round2",
    "advisor",
    "advisor_noresp",
    "advisor_resp",
    "editor",
    "editor_nosugg",
    "judge",
    "judge_reverse",
    "judge_score",
    "judge_score_reverse",
    "history_turn",
    "critic",
    "refiner",
)

# The slots each template may use; an override using anything else is a configuration error.
_SLOTS: dict[str, frozenset[str]] = {
    "sample_with_input": frozenset({"instruction", "input", "output"}),
    "sample_without_input": frozenset({"instruction", "output"}),
    "request_with_input": frozenset({"instruction", "input"}),
    "request_without_input": frozenset({"instruction"}),
    "positive_round1": frozenset({"sample"}),
    "critical_round1": frozenset({"sample"}),
    "positive_round2": frozenset({"crt_pred"}),
    "critical_round2": frozenset({"pos_pred"}),
    "advisor": frozenset({"sample", "pos_pred", "crt_pred", "pos_free", "crt_free"}),
    "advisor_noresp": frozenset({"sample_request"}),
    "advisor_resp": frozenset({"sample"}),
    "editor": frozenset({"adv_sugg", "pre_resp", "sample", "sample_request"}),
    "editor_nosugg": frozenset({"sample_request"}),
    "judge": frozenset({"sample_request", "pre_resp", "new_resp"}),
    "judge_reverse": frozenset({"sample_request", "pre_resp", "new_resp"}),
    "judge_score": frozenset({"sample_request", "pre_resp", "new_resp"}),
    "judge_score_reverse": frozenset({"sample_request", "pre_resp", "new_resp"}),
    "history_turn": frozenset({"role", "content"}),
    "critic": frozenset({"prompt", "response"}),
}

_SLOT_RE = re.compile(r"\{([a-z_]+)\}")


def _strip_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith("#:")]
    return "\n".join(lines).rstrip("\n")


@lru_cache(maxsize=256)
def _parts(template: str) -> tuple[str, ...]:
    """``template`` cut at its slots once: literal, slot name, literal, ..., literal."""
    return tuple(_SLOT_RE.split(template))


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` slots with ``values[name]``; other braces are left alone.

    Every call of a run fills the same few templates, so each is cut at its slots once and then
    only joined (no regex pass, no callback per slot).
    """
    parts = _parts(template)
    out = list(parts)
    for i in range(1, len(parts), 2):
        name = parts[i]
        out[i] = values[name] if name in values else "{" + name + "}"
    return "".join(out)


class Rendered(str):
    """A filled template that remembers how it was made.

    Its markers are the template's own, so when it fills a slot of another template it is not
    treated as data: it is filled again from its raw values, guarded by the markers of every
    template in the composed prompt (a ``{sample}`` inside the judge prompt guards the
    instruction against both the sample's and the judge's markers).
    """

    template: str
    values: Mapping[str, str]

    def __new__(cls, text: str, template: str, values: Mapping[str, str]) -> Rendered:
        self = super().__new__(cls, text)
        self.template = template
        self.values = values
        return self

    def __getnewargs__(self) -> tuple[str, str, Mapping[str, str]]:  # type: ignore[override]
        return str(self), self.template, self.values


def _markers(template: str, values: Mapping[str, str]) -> frozenset[str]:
    """The markers of ``template`` and of every template nested in its values."""
    found = boundaries(template)
    for value in values.values():
        if isinstance(value, Rendered):
            found |= _markers(value.template, value.values)
    return found


def _fill_guarded(template: str, values: Mapping[str, str], guard: frozenset[str]) -> str:
    filled = {
        name: _fill_guarded(v.template, v.values, guard) if isinstance(v, Rendered) else neutralise(v, guard)
        for name, v in values.items()
    }
    return fill(template, filled)


def compose(template: str, values: Mapping[str, str]) -> Rendered:
    """``fill``, with data defused against the markers of the whole composed prompt.

    Plain strings are data; a ``Rendered`` value is a nested template. Whatever the data holds,
    each marker appears in the result only where a template puts it.
    """
    guard = _markers(template, values)
    return Rendered(_fill_guarded(template, values, guard), template, dict(values))


@dataclass(frozen=True, slots=True)
class PromptSet:
    """Every template by name, comments removed."""

    texts: Mapping[str, str]

    def __getitem__(self, name: str) -> str:
        return self.texts[name]

    def render(self, name: str, **values: str) -> Rendered:
        """Template ``name`` filled with ``values``; see ``compose`` for how data is guarded."""
        return compose(self.texts[name], values)


def _builtin(name: str) -> str:
    return resources.files("coevol.prompts").joinpath("templates", f"{name}.txt").read_text("utf-8")


def _override_text(path: Path) -> str:
    """A template file's text without comments: a regular UTF-8 file with something in it."""
    if not path.is_file():  # a FIFO would hang the read, a link to a device never end
        raise ConfigError(f"{path}: a prompt template must be a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read prompt template {path}: {exc.strerror or exc}") from None
    try:
        text = _strip_comments(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the template as UTF-8") from None
    if not text.strip():
        raise ConfigError(
            f"{path}: the template is empty (only comment lines?); remove the file to use the default"
        )
    return text


def _check_slots(path: Path, name: str, text: str) -> None:
    """Exactly the slots the role fills: an unknown one would be sent as ``{smaple}``, a missing one
    would hide part of the task (a judge without ``{new_resp}`` never sees the edit)."""
    allowed = _SLOTS.get(name, frozenset())
    used = set(_SLOT_RE.findall(text))
    unknown = sorted(used - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown slot(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"this template can use: {', '.join(sorted(allowed)) or 'none'}"
        )
    missing = sorted(allowed - used)
    if missing:
        raise ConfigError(
            f"{path}: missing slot(s) {', '.join('{' + m + '}' for m in missing)}; this template must "
            f"contain every one of: {', '.join('{' + a + '}' for a in sorted(allowed))}"
        )


def load_prompts(override_dir: Path | str | None = None) -> PromptSet:
    """The paper's prompts, with any ``<name>.txt`` in ``override_dir`` taking precedence.

    Overrides are validated: an unknown file name, a slot the template cannot fill, a slot it
    lacks, an empty or non-UTF-8 file is an error, before the first request.
    """
    texts = {name: _strip_comments(_builtin(name)) for name in TEMPLATE_NAMES}
    if override_dir is not None:
        folder = Path(override_dir)
        if not folder.is_dir():
            raise ConfigError(f"prompt folder not found: {folder}")
        for path in sorted(folder.glob("*.txt")):
            name = path.stem
            if name not in texts:
                known = ", ".join(TEMPLATE_NAMES)
                raise ConfigError(f"unknown prompt template {path.name!r}; known: {known}")
            text = _override_text(path)
            _check_slots(path, name, text)
            texts[name] = text
    return PromptSet(texts)
