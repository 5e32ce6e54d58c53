"""The Hugging Face Hub spelling (pure) and the push of a refined split against a local fake Hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from coevol.errors import ConfigError
from coevol.io.hub import HubSpec, parse_hub


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("hf://datasets/owner/name", HubSpec("owner/name")),
        ("hf://datasets/owner/name:test", HubSpec("owner/name", None, "test")),
        ("hf://datasets/owner/name@v1.0:validation", HubSpec("owner/name", "v1.0", "validation")),
        ("hf://datasets/owner/name@refs/pr/3", HubSpec("owner/name", "refs/pr/3")),
        ("hf://owner/name:train", HubSpec("owner/name")),  # 0.2's spelling
        (Path("hf://datasets/owner/my_data-2"), HubSpec("owner/my_data-2")),  # a Path folds // into /
        ("data.jsonl", None),
        ("./hf/owner/name", None),
    ],
)
def test_hub_names(text: str | Path, spec: HubSpec | None) -> None:
    assert parse_hub(text) == spec


@pytest.mark.parametrize(
    "text",
    [
        "hf://datasets/owner",
        "hf://datasets/owner/name/extra",
        "hf://datasets/../name",
        "hf://datasets/owner/..",
        "hf://datasets/owner/name@../../etc",
        "hf://datasets/owner/name:sp lit",
        "hf://datasets/owner/na\x1bme",
    ],
)
def test_malformed_hub_names_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hub(text)


def test_a_spec_prints_as_it_is_written() -> None:
    assert str(HubSpec("owner/name", "v1", "test")) == "hf://datasets/owner/name@v1:test"
    assert str(HubSpec("owner/name")) == "hf://datasets/owner/name:train"
