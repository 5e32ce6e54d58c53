"""Pure prompt construction: a sample in, exact strings and chat messages out. No I/O.

The functions here are what the golden-string tests pin to the paper's texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coevol.domain import NO_INPUT_PLACEHOLDERS, Message
from coevol.prompts.templates import PromptSet

__all__ = [
    "NO_INPUT_PLACEHOLDERS",
    "Sample",
    "has_input",
    "merge_system_prompt",
    "messages",
    "render_request",
    "render_sample",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """What the agents see: an instruction, an optional input and the response under refinement.

    For a multi-turn conversation ``instruction`` already carries the visible history window.
    """

    instruction: str
    input: str
    response: str

    def with_response(self, response: str) -> Sample:
        return Sample(self.instruction, self.input, response)


def has_input(sample: Sample) -> bool:
    return sample.input.strip().lower() not in NO_INPUT_PLACEHOLDERS


def render_sample(prompts: PromptSet, sample: Sample) -> str:
    """Table 6: the structured sample text ``{sample}`` (instruction, optional input, response)."""
    if has_input(sample):
        return prompts.render(
            "sample_with_input", instruction=sample.instruction, input=sample.input, output=sample.response
        )
    return prompts.render("sample_without_input", instruction=sample.instruction, output=sample.response)


def render_request(prompts: PromptSet, sample: Sample) -> str:
    """``{sample_request}``: the structured sample without its response."""
    if has_input(sample):
        return prompts.render("request_with_input", instruction=sample.instruction, input=sample.input)
    return prompts.render("request_without_input", instruction=sample.instruction)


def messages(system: str, user: str, history: Sequence[Message] = ()) -> list[Message]:
    """A role-play system message, the agent's memory of earlier exchanges, then the new task."""
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": user}]


def merge_system_prompt(msgs: Sequence[Message]) -> list[Message]:
    """Appendix A.2: for models without a system role, put the role-play prompt before the task.

    The system text is joined to the first user message with a blank line.
    """
    if not msgs or msgs[0]["role"] != "system":
        return list(msgs)
    system, rest = msgs[0]["content"], list(msgs[1:])
    for i, msg in enumerate(rest):
        if msg["role"] == "user":
            rest[i] = {"role": "user", "content": f"{system}\n\n{msg['content']}"}
            return rest
    return [{"role": "user", "content": system}, *rest]
