"""In-process scripts for the algorithm-core tests: no sockets, every answer chosen by the test.

``Agents`` answers each role from its own list (``Reply`` carries a finish reason and exact token
counts), lets the judge be a function of the two presented responses, and can raise an error on
the N-th call of the whole run, so a test pins exactly which call failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from coevol.errors import LLMError
from coevol.llm.types import Completion, Message
from coevol.roles.agents import clean_edit
from coevol.testing import Reply

START_1 = "[The Start of Assistant 1's Response]\n"
END_1 = "\n[The End of Assistant 1's Response]"
START_2 = "[The Start of Assistant 2's Response]\n"
END_2 = "\n[The End of Assistant 2's Response]"

Script = str | Reply
Judge = Callable[[str, str, int], Script]
"""``(assistant 1's response, assistant 2's response, attempt) -> answer``."""


def presented(messages: Sequence[Message]) -> tuple[str, str]:
    """The two responses a judge prompt shows, in presentation order."""
    task = messages[-1]["content"]
    first = task.split(START_1, 1)[1].split(END_1, 1)[0]
    second = task.split(START_2, 1)[1].split(END_2, 1)[0]
    return first, second


def previous_response(messages: Sequence[Message]) -> str:
    """The response an editor prompt asks to modify."""
    return messages[-1]["content"].split("### Previous Response:\n", 1)[1].split("\n\n", 1)[0]


@dataclass
class Agents:
    """A scripted ``Generate``: answers per role in call order; ``judge`` decides judge answers.

    ``edit`` answers the editor from the previous response instead of a list. ``fail_at``/``error``:
    raise ``error`` on that call (1-based, counted over every role). Calls past a role's list repeat
    its last answer, so a test scripts only what matters.
    """

    answers: dict[str, list[Script]] = field(default_factory=dict)
    judge: Judge | None = None
    edit: Callable[[str], Script] | None = None
    fail_at: int | None = None
    error: LLMError | None = None
    calls: list[tuple[str, int]] = field(default_factory=list)
    last_edit: str | None = None  # the response the editor last proposed (header stripped)
    _used: dict[str, int] = field(default_factory=dict)

    def of(self, role: str) -> int:
        return sum(1 for r, _ in self.calls if r == role)

    def prefers_the_edit(self, first: str, second: str, attempt: int) -> str:
        """A careless judge: always names the edit, in either order (set as ``judge``)."""
        return "<assistant 2>" if second == self.last_edit else "<assistant 1>"

    def _scripted(self, role: str, messages: Sequence[Message]) -> Script:
        if role == "editor" and self.edit is not None:
            return self.edit(previous_response(messages))
        script = self.answers[role]
        i = self._used.get(role, 0)
        self._used[role] = i + 1
        return script[min(i, len(script) - 1)]

    async def __call__(
        self, role: str, messages: Sequence[Message], *, attempt: int = 0, seed: int | None = None, n: int = 1
    ) -> Completion:
        self.calls.append((role, attempt))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            assert self.error is not None
            raise self.error
        if role == "judge" and self.judge is not None:
            answer = self.judge(*presented(messages), attempt)
        else:
            answer = self._scripted(role, messages)
        reply = answer if isinstance(answer, Reply) else Reply(answer)
        if role == "editor":
            self.last_edit = clean_edit(reply.text)
        return Completion(
            reply.text,
            reply.prompt_tokens if reply.prompt_tokens is not None else 10,
            reply.completion_tokens if reply.completion_tokens is not None else 1,
            reply.finish_reason,
        )


def debaters(n: int = 1) -> dict[str, list[Script]]:
    """Debate and advisor answers for ``n`` iterations (their content does not matter here)."""
    return {
        "positive": [f"positive {s} #{i}" for i in range(1, n + 1) for s in ("stage 1", "stage 2")],
        "critical": [f"critical {s} #{i}" for i in range(1, n + 1) for s in ("stage 1", "stage 2")],
        "advisor": [f"1. suggestion #{i}" for i in range(1, n + 1)],
    }
