"""The Hugging Face Hub, in and out: read a dataset by its Hub name, push a refined split back.

Spelling (as huggingface_hub's own file system writes it): ``hf://datasets/OWNER/NAME[@REVISION][:SPLIT]``;
0.2's ``hf://OWNER/NAME[:SPLIT]`` still reads. The split defaults to ``train``.

Reading goes through ``huggingface_hub`` (download into, or read from, its cache: ``HF_HUB_OFFLINE=1``
reads a cached snapshot without the network) and ``datasets`` (which files make which split), both
from the ``[datasets]`` extra. Pushing commits the output file and a dataset card in one commit.
A token is read by huggingface_hub itself (``HF_TOKEN`` or its login) and never printed; every Hub
error becomes one ``DataError``/``OutputError`` line that names the dataset, never the token.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coevol.errors import ConfigError, DataError, OutputError
from coevol.extras import require

__all__ = ["HubSpec", "open_hub_rows", "parse_hub", "push_dataset"]

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO = re.compile(rf"{_NAME}/{_NAME}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_SPLIT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# The data files a snapshot needs (not the repository's other files, such as images or models).
_DATA_PATTERNS = [
    "*.parquet",
    "*.jsonl",
    "*.json",
    "*.csv",
    "*.arrow",
    "*.jsonl.gz",
    "*.json.gz",
    "README.md",
]


@dataclass(frozen=True, slots=True)
class HubSpec:
    """A dataset on the Hub: ``repo`` (owner/name), an optional revision, and the split to read."""

    repo: str
    revision: str | None = None
    split: str = "train"

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"hf://datasets/{self.repo}{at}:{self.split}"


def parse_hub(text: str | os.PathLike[str]) -> HubSpec | None:
    """The Hub dataset ``text`` names, ``None`` when it is not a Hub name; ``ConfigError`` when it is
    one but malformed. Pure. A ``Path`` folds ``hf://`` into ``hf:/``, so both spellings count."""
    s = os.fspath(text)
    for prefix in ("hf://", "hf:/"):
        if s.startswith(prefix):
            s = s.removeprefix(prefix)
            break
    else:
        return None
    s = s.removeprefix("datasets/")
    spec, _, split = s.partition(":")
    repo, _, revision = spec.partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ConfigError(
            f"not a Hub dataset name: {os.fspath(text)!r}; write hf://datasets/OWNER/NAME[@REVISION][:SPLIT]"
        )
    if revision and (not _REVISION.fullmatch(revision) or ".." in revision):
        raise ConfigError(f"not a Hub revision: {revision!r}")
    if split and not _SPLIT.fullmatch(split):
        raise ConfigError(f"not a split name: {split!r}")
    return HubSpec(repo, revision or None, split or "train")


def _hub() -> Any:
    require("huggingface_hub", "the Hugging Face Hub", "datasets")
    import huggingface_hub

    return huggingface_hub


def _hub_error(what: str, exc: Exception) -> str:
    """One line for a Hub failure: its kind and first line, never a URL's token (none is in it)."""
    name = type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    hints = {
        "RepositoryNotFoundError": "no such dataset (or it is private: set HF_TOKEN)",
        "GatedRepoError": "the dataset is gated: accept its terms on the Hub and set HF_TOKEN",
        "RevisionNotFoundError": "no such revision",
        "LocalEntryNotFoundError": "not in the local Hub cache, and the Hub cannot be reached",
        "OfflineModeIsEnabled": "not in the local Hub cache, and HF_HUB_OFFLINE is set",
    }
    return f"{what}: {hints.get(name, name)}" + (f" ({first})" if first and name not in hints else "")


def open_hub_rows(spec: HubSpec) -> Any:
    """The split's rows, streamed from the dataset's snapshot (downloaded once into the Hub cache)."""
    hub = _hub()
    require("datasets", "Hugging Face datasets", "datasets")
    import datasets

    try:
        folder = hub.snapshot_download(
            spec.repo, repo_type="dataset", revision=spec.revision, allow_patterns=_DATA_PATTERNS
        )
    except Exception as exc:  # huggingface_hub's errors (HTTP, cache, offline): translated once, here
        raise DataError(_hub_error(f"cannot read {spec}", exc)) from None
    try:
        return datasets.load_dataset(folder, split=spec.split, streaming=True)
    except ValueError as exc:  # an unknown split, or files datasets cannot read
        raise DataError(f"cannot read {spec}: {str(exc).splitlines()[0][:300]}") from None
    except FileNotFoundError:
        raise DataError(f"cannot read {spec}: the snapshot holds no data files") from None


def push_dataset(
    repo: str, files: dict[str, Path | bytes], *, private: bool = False, message: str = "Refined with coevol"
) -> str:
    """Create the dataset repository if needed and commit ``files`` (path in repo -> local file or
    bytes) in one commit; returns the commit's URL. ``HF_ENDPOINT`` and ``HF_TOKEN`` are read by
    huggingface_hub, as everywhere."""
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ConfigError(f"--push-to-hub needs OWNER/NAME, got {repo!r}")
    hub = _hub()
    api = hub.HfApi()
    operations = [
        hub.CommitOperationAdd(
            path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes) else str(content)
        )
        for name, content in files.items()
    ]
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        info = api.create_commit(repo, operations, repo_type="dataset", commit_message=message)
    except Exception as exc:  # huggingface_hub's errors (HTTP, auth): translated once, here
        raise OutputError(_hub_error(f"cannot push to hf://datasets/{repo}", exc)) from None
    return str(getattr(info, "commit_url", "") or f"hf://datasets/{repo}")
