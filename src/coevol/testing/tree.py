"""A deterministic responder for the tree strategy: critic votes known per response.

``TreeResponder(votes, refine)`` answers SPaR's two roles over HTTP (as a fake-server responder)
or in-process (``as_generate()``, or through a ``ResponderBackend``):

- **critic**: ``votes(response)`` gives the labels of each draw for that response, e.g.
  ``[["Yes", "No", "No", "No", None]]`` (None: a critique with no label). Votes are handed out in
  order per response, so a re-draw after a tie gets the next draw (the last one repeats). With
  ``honour_n`` a request asking for ``n`` gets ``n`` votes as choices; without it (llama.cpp's
  server) one vote per request. A critique's text depends only on its label and the response, so
  the order in which concurrent requests arrive never changes a tree.
- **refiner**: ``refine(parent, seed, nth)`` gives the new response for a child of ``parent``
  (``seed`` is the request's, ``nth`` how many refine requests that parent had before), or None
  for an answer without the ``[[start]]``/``[[end]]`` markers. The default appends ``|seed``, so
  siblings differ exactly when their seeds do.

Any other request is answered by ``fallback`` (``CoEvolResponder`` for the CoEvol tree).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from coevol.testing.fakes import ResponderGenerate
from coevol.testing.responders import CoEvolResponder
from coevol.testing.server import Reply, Responder

__all__ = [
    "CRITIC_HEAD",
    "Label",
    "TreeResponder",
    "all_votes",
    "critique_text",
    "responder",
    "shown_response",
]

Label = str | None
CRITIC_HEAD = "Please act an expert in evaluating the capabilities of instruction-following."
_OUT_START, _OUT_END = "Output: \u201c", "\u201d\n\nPlease carefully judge"
_REFINE_HEAD = "Based on your judgement, refine the Output"


def all_votes(*labels: Label) -> Callable[[str], Sequence[Sequence[Label]]]:
    """A vote policy giving every response the same single draw."""
    return lambda response: [list(labels)]


def shown_response(prompt: str) -> str:
    """The response a critic prompt shows."""
    start = prompt.index(_OUT_START) + len(_OUT_START)
    return prompt[start : prompt.rindex(_OUT_END)]


def critique_text(response: str, label: Label) -> str:
    """The critique a vote answers with: the label in SPaR's format, or no label at all."""
    if label is None:
        return f"Step-by-step verification: I cannot tell whether {response!r} follows the Prompt."
    return (
        f"Step-by-step verification: checked {response!r}.\n"
        f"Final Judgement (if the Output accurately follows the Prompt): {label}"
    )


def _default_refine(parent: str, seed: int, nth: int) -> str | None:
    return f"{parent}|{seed}"


class TreeResponder:
    """See the module docstring; ``served`` counts votes per response, ``refines`` per parent."""

    def __init__(
        self,
        votes: Callable[[str], Sequence[Sequence[Label]]],
        refine: Callable[[str, int, int], str | None] = _default_refine,
        *,
        honour_n: bool = True,
        fallback: Responder | None = None,
    ) -> None:
        self.votes = votes
        self.refine = refine
        self.honour_n = honour_n
        self.fallback = fallback or CoEvolResponder()
        self.served: Counter[str] = Counter()
        self.refines: Counter[str] = Counter()

    def _vote(self, response: str) -> str:
        draws = self.votes(response)
        v = self.served[response]
        self.served[response] += 1
        draw = draws[min(v // len(draws[0]), len(draws) - 1)]
        return critique_text(response, draw[v % len(draw)])

    def __call__(self, body: dict[str, Any]) -> str | Reply:
        messages: list[dict[str, str]] = body["messages"]
        first = messages[0]["content"] if messages else ""
        if not first.startswith(CRITIC_HEAD):
            return self.fallback(body)
        response = shown_response(first)
        if len(messages) == 3 and messages[2]["content"].startswith(_REFINE_HEAD):
            nth = self.refines[response]
            self.refines[response] += 1
            child = self.refine(response, int(body.get("seed") or 0), nth)
            reflection = "Reflection on how to refine the Output: fix it.\nFinal Refined Output: "
            return reflection + ("(no markers)" if child is None else f"[[start]] {child} [[end]]")
        n = int(body.get("n") or 1) if self.honour_n else 1
        texts = [self._vote(response) for _ in range(n)]
        return Reply(texts[0], more=tuple(texts[1:]))

    def as_generate(self) -> ResponderGenerate:
        """This responder as an in-process ``Generate`` (no HTTP)."""
        return ResponderGenerate(self)


def _first_level_passes(response: str) -> Sequence[Sequence[Label]]:
    """The shipped policy: an original (no ``|``) fails every vote, a refined response passes."""
    return [["Yes"] * 5] if "|" in response else [["No"] * 5]


responder = TreeResponder(_first_level_passes)
"""Import path for the fake server CLI: ``--responder coevol.testing.tree:responder``."""
