"""Which responses of two versions of a dataset are compared with each other. Pure: no I/O.

Rows are matched by ``id`` when every row of both files has one, else by position. Either way the
two rows must be the same request: the same turns in the same roles, the same system message,
instructions and inputs; only assistant turns may differ. The first row that breaks this stops the
comparison with a ``DataError`` naming it, before anything is sent. A conversation gives one unit
per assistant turn (the turns the refiner rewrites); the judge sees each turn with the baseline's
earlier turns as history, so both responses answer the very same conversation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import orjson

from coevol.conversation import ConversationSettings, refinable_turns, window_sample
from coevol.domain import Example
from coevol.errors import DataError
from coevol.prompts.render import Sample
from coevol.prompts.templates import PromptSet
from coevol.textsafe import inert_line

__all__ = ["Misaligned", "Side", "Unit", "match_rows", "row_units", "stream_pairs", "units_of"]

_SHOWN = 60  # characters of a differing text quoted in a mismatch error


@dataclass(frozen=True, slots=True)
class Side:
    """One input file as the matcher sees it: a name for messages and its parsed rows in order."""

    name: str
    rows: Sequence[Example]


@dataclass(frozen=True, slots=True)
class Unit:
    """One response pair to judge: row ``row`` (0-based, baseline order), assistant turn ``turn``."""

    row: int
    turn: int
    id: Any
    baseline_line: int
    candidate_line: int
    sample: Sample  # the request with the baseline's response (what the judge's "previous" slot shows)
    candidate: str

    @property
    def baseline(self) -> str:
        return self.sample.response

    @property
    def identical(self) -> bool:
        """Identical responses (surrounding whitespace aside) are ties without a call."""
        return self.baseline.strip() == self.candidate.strip()


def _has_id(example: Example) -> bool:
    return example.raw.get("id") is not None


def _id_key(value: Any) -> bytes:
    """An id's identity as JSON: ``1`` and ``"1"`` are different ids, as in the file."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return repr(value).encode()


def _show(value: Any) -> str:
    """A text quoted (inert, cut short) or another id as its JSON, for one-line messages."""
    if not isinstance(value, str):
        text = inert_line(_id_key(value).decode("utf-8", "replace"))
        return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
    text = inert_line(value)
    return "'" + (text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...") + "'"


def _index_by_id(side: Side) -> dict[bytes, Example]:
    out: dict[bytes, Example] = {}
    for ex in side.rows:
        key = _id_key(ex.raw["id"])
        if key in out:
            raise DataError(
                f"{side.name}: id {_show(ex.raw['id'])} appears twice (lines {out[key].line} and "
                f"{ex.line}); ids must be unique to match rows by id",
                line=ex.line,
                source=side.name,
            )
        out[key] = ex
    return out


def match_rows(baseline: Side, candidate: Side) -> tuple[str, list[tuple[Example, Example]]]:
    """Pair the rows of the two files: ``("id", pairs)`` or ``("position", pairs)``, baseline order.

    Raises ``DataError`` naming the first row that has no partner (a missing id, a different number
    of rows) or whose request differs (see ``check_same_request``).
    """
    if baseline.rows and candidate.rows and all(map(_has_id, [*baseline.rows, *candidate.rows])):
        by_id = _index_by_id(candidate)
        _index_by_id(baseline)  # duplicates in the baseline are as ambiguous
        pairs = []
        for ex in baseline.rows:
            other = by_id.pop(_id_key(ex.raw["id"]), None)
            if other is None:
                raise DataError(
                    f"{candidate.name} has no row with id {_show(ex.raw['id'])} "
                    f"({baseline.name} line {ex.line})",
                    line=ex.line,
                    source=candidate.name,
                )
            pairs.append((ex, other))
        if by_id:
            extra = min(by_id.values(), key=lambda e: e.line)
            raise DataError(
                f"{candidate.name} line {extra.line}: id {_show(extra.raw['id'])} is not in {baseline.name}",
                line=extra.line,
                source=candidate.name,
            )
        mode = "id"
    else:
        if len(baseline.rows) != len(candidate.rows):
            raise _count_mismatch(baseline.name, len(baseline.rows), candidate.name, len(candidate.rows))
        pairs = list(zip(baseline.rows, candidate.rows, strict=True))
        mode = "position"
    for position, (b, c) in enumerate(pairs):
        check_same_request(position, b, c, baseline.name, candidate.name)
    return mode, pairs


def _count_mismatch(bname: str, brows: int, cname: str, crows: int) -> DataError:
    return DataError(
        f"{bname} has {brows} rows and {cname} {crows}: rows without an id are matched by position, "
        "so both must have the same rows (give every row an id to compare a subset)",
        source=cname,
    )


class Misaligned(Exception):
    """Every row has an id but the two files do not list them in the same order (or count): the
    rows can only be matched through an index of one file (``match_rows``)."""


def stream_pairs(
    baseline: Iterable[Example], candidate: Iterable[Example], bname: str, cname: str
) -> Iterator[tuple[int, Example, Example]]:
    """``match_rows`` in one pass over both files, holding no row: pairs by position, checked as
    ``match_rows`` checks them. When every row so far has an id, the ids must be equal position by
    position (then matching by id gives the same pairs) and unique; the first that differ raise
    ``Misaligned``. Memory: a 16-byte digest per id while every row has one, nothing otherwise."""
    seen: set[bytes] | None = set()
    counts = [0, 0]
    pairs = zip_longest(baseline, candidate)
    for position, (b, c) in enumerate(pairs):
        if b is None or c is None:
            if seen is not None:
                raise Misaligned
            counts = [position + (b is not None), position + (c is not None)]
            for rest_b, rest_c in pairs:
                counts[0] += rest_b is not None
                counts[1] += rest_c is not None
            raise _count_mismatch(bname, counts[0], cname, counts[1])
        if seen is not None and _has_id(b) and _has_id(c):
            key = _id_key(b.raw["id"])
            if key != _id_key(c.raw["id"]):
                raise Misaligned
            digest = hashlib.blake2b(key, digest_size=16).digest()
            if digest in seen:
                raise Misaligned  # a duplicate id: match_rows names both lines
            seen.add(digest)
        else:
            seen = None  # a row without an id: matched by position, as match_rows would
        check_same_request(position, b, c, bname, cname)
        yield position, b, c


def _where(position: int, b: Example, c: Example, bname: str, cname: str) -> str:
    return f"row {position} ({bname} line {b.line}, {cname} line {c.line})"


def check_same_request(position: int, b: Example, c: Example, bname: str, cname: str) -> None:
    """The two rows ask the same thing: same turns and roles, same non-assistant texts and inputs."""
    where = _where(position, b, c, bname, cname)
    if len(b.turns) != len(c.turns):
        raise DataError(
            f"{where} is not the same request: {len(b.turns)} turns in {bname}, {len(c.turns)} in {cname}",
            line=c.line,
            source=cname,
        )
    for t, (bt, ct) in enumerate(zip(b.turns, c.turns, strict=True)):
        what = None
        if bt.role != ct.role:
            what = f"turn {t + 1} is {bt.role!r} in one and {ct.role!r} in the other"
        elif bt.role != "assistant" and bt.content != ct.content:
            label = "instruction" if bt.role == "user" else f"{inert_line(bt.role)} message"
            what = f"the {label} of turn {t + 1} differs: {_show(bt.content)} vs {_show(ct.content)}"
        elif bt.input != ct.input:
            what = f"the input of turn {t + 1} differs: {_show(bt.input)} vs {_show(ct.input)}"
        if what is not None:
            raise DataError(f"{where} is not the same request: {what}", line=c.line, source=cname)


def row_units(
    prompts: PromptSet, position: int, b: Example, c: Example, window_rounds: int = 3
) -> list[Unit]:
    """The units of one matched row: each assistant turn the refiner would rewrite."""
    turns = refinable_turns(b.turns, ConversationSettings(window_rounds=window_rounds))
    out = []
    for t in turns:
        sample = window_sample(prompts, b.turns, t, window_rounds)
        out.append(Unit(position, t, b.raw.get("id"), b.line, c.line, sample, c.turns[t].content))
    return out


def units_of(
    prompts: PromptSet, pairs: Sequence[tuple[Example, Example]], window_rounds: int = 3
) -> list[Unit]:
    """Every unit of every matched row, in baseline order."""
    return [u for i, (b, c) in enumerate(pairs) for u in row_units(prompts, i, b, c, window_rounds)]
