"""``LlamaCppBackend``: the embedded model, run in-process by llama-cpp-python.

llama.cpp is not thread-safe, so every touch of the model (loading, generating, freeing) runs on one
dedicated worker thread; calls queue behind each other there and the event loop never blocks. The
chat template is the one embedded in the GGUF (llama-cpp-python picks it up by default).

Determinism: ``temperature == 0`` samples greedily. The prompt is re-evaluated from scratch on every
call (no reuse of the previous call's KV cache), because a prefix hit evaluates the tail in a
different batch shape and can change the floating-point result, which would make an identical
request answer differently depending on what ran before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coevol.errors import ContextLengthError, FatalError, MissingExtra, ModelAssetError
from coevol.llm.logprobs import parse_chat_logprobs
from coevol.llm.model_asset import EMBEDDED_MODELS, EmbeddedModel, verify_gguf
from coevol.llm.types import ChatRequest, Completion

__all__ = ["LlamaCppBackend", "default_threads", "finish_reason"]

_FEATURE = "the embedded model"
_EXTRA = "local"

# Sampling knobs the OpenAI-style request does not carry, pinned to llama.cpp's server defaults so
# results do not drift when llama-cpp-python changes its own defaults.
_TOP_K = 40
_MIN_P = 0.05
_REPEAT_PENALTY = 1.0


def default_threads(cpus: int | None = None) -> int:
    """Half the CPUs this process may run on, at least 1 (``--threads`` overrides it).

    llama.cpp's threads spin while they wait for each other, so taking every CPU of a machine that
    is busy with anything else stalls them all: on a loaded 2-core machine one thread ran the 1.5B
    at 79 s per call while two threads had not finished two such calls after 22 minutes (README).
    Half the logical CPUs is also about the physical cores where SMT doubles them.
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _extra_buffer_types(enabled: bool) -> Iterator[None]:
    """Load with or without ggml's "extra" CPU buffer types (AMX, repacked-weight layouts).

    ``llama_cpp.Llama`` does not expose ``llama_model_params.use_extra_bufts``; it builds its params
    from ``llama_model_default_params()``, so that function is wrapped for the duration of the load.
    A native build on an AMX-capable host enables the AMX kernels, which die with SIGILL in some
    VMs (seen under Firecracker) -- an uncatchable crash -- so the default is off.
    """
    low = sys.modules.get("llama_cpp.llama_cpp")
    original = getattr(low, "llama_model_default_params", None)
    if enabled or low is None or original is None:
        yield
        return

    def patched() -> Any:
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    with _PATCH_LOCK:
        low.llama_model_default_params = patched  # type: ignore[attr-defined]
        try:
            yield
        finally:
            low.llama_model_default_params = original  # type: ignore[attr-defined]


def _llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def _quiet_devnull_files() -> None:
    """llama-cpp-python opens two ``/dev/null`` files at import and never closes them, so every
    process that loaded the model ended with "ResourceWarning: unclosed file". Swap them for files
    on a descriptor the process keeps until it exits (``closefd=False`` never warns); the library
    uses them exactly as before."""
    utils = sys.modules.get("llama_cpp._utils")
    if utils is None:
        return
    for name in ("outnull_file", "errnull_file"):
        current = getattr(utils, name, None)
        raw = getattr(getattr(current, "buffer", None), "raw", None)
        if current is None or raw is None or not raw.closefd:
            continue
        setattr(utils, name, open(os.open(os.devnull, os.O_WRONLY), "w", closefd=False))  # noqa: SIM115
        current.close()


def _is_context_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "context window" in text or ("exceed" in text and "context" in text)


def finish_reason(given: object, completion_tokens: int, max_tokens: int) -> str:
    """Why generation ended, as the HTTP backend reports it: "length" when cut off at ``max_tokens``.

    llama-cpp-python normally says so itself; when a version leaves it out, the token count tells.
    """
    if isinstance(given, str) and given:
        return given
    return "length" if completion_tokens >= max(1, max_tokens) else "stop"


class LlamaCppBackend:
    """A ``Backend`` answering chat requests with a local GGUF model through llama.cpp.

    ``model_path=None`` means the embedded model ``embedded`` (default Qwen2.5-Coder-0.5B-Instruct),
    assembled and verified in the cache folder on first load. ``n_threads=None`` uses half the CPUs this
    process may run on (``default_threads``).
    ``logprobs=True`` builds the model with every position's logits (``logits_all``), which chat
    logprobs need (``--judge prob``); it costs time and memory on every call (README, "--judge
    prob"), so it is off unless asked. Without it a request for logprobs answers with none.
    ``extra_buffer_types=True`` lets ggml use its AMX / repacked-weight CPU kernels (faster where they
    work; see ``_extra_buffer_types`` for why it is off by default).
    ``request.model`` is ignored (the loaded file is the model); ``request.endpoint`` should be
    ``self.endpoint`` so cache keys name this model.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        verbose: bool = False,
        extra_buffer_types: bool = False,
        logprobs: bool = False,
        embedded: EmbeddedModel = EMBEDDED_MODELS["0.5b"],
    ) -> None:
        if n_ctx <= 0:
            raise ValueError("n_ctx must be positive")
        if n_batch <= 0:
            raise ValueError("n_batch must be positive")
        if n_threads is not None and n_threads <= 0:
            raise ValueError("n_threads must be positive")
        if not _llama_cpp_available():
            raise MissingExtra(_FEATURE, embedded.extra if model_path is None else _EXTRA)
        self.model_path: Path | None = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads if n_threads is not None else default_threads()
        self.n_batch = n_batch
        self.seed = seed
        self.verbose = verbose
        self.extra_buffer_types = extra_buffer_types
        self.logprobs = logprobs
        self.embedded = embedded
        if self.model_path is None:
            self.endpoint = f"llama.cpp://{embedded.filename}#{embedded.sha256[:16]}"
        else:
            verify_gguf(self.model_path)  # cheap: exists and starts with the GGUF magic
            size = self.model_path.stat().st_size
            self.endpoint = f"llama.cpp://{self.model_path.name}#{size}"
        self._llama: Any = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coevol-llama")

    # -- worker-thread side -------------------------------------------------------------------

    def _load_sync(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingExtra(_FEATURE, self.embedded.extra if self.model_path is None else _EXTRA) from exc
        _quiet_devnull_files()
        if self.model_path is None:
            path = self.embedded.ensure()
        else:
            path = self.model_path
            verify_gguf(path)
        try:
            with _extra_buffer_types(self.extra_buffer_types):
                self._llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_batch=min(self.n_batch, self.n_ctx),
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    n_gpu_layers=0,
                    verbose=self.verbose,
                    logits_all=self.logprobs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelAssetError(f"llama.cpp could not load {path}: {exc}") from exc
        return self._llama

    def _complete_sync(self, request: ChatRequest) -> Completion:
        if self._closed:
            raise FatalError("the local model backend is closed")
        llama = self._load_sync()
        params = request.params
        base_seed = params.seed if params.seed is not None else self.seed
        # ``attempt`` re-asks must be able to differ when sampling; at temperature 0 it changes nothing.
        seed = (base_seed + request.attempt) & 0xFFFFFFFF
        llama.reset()  # no KV-cache prefix reuse: identical requests give identical answers
        asked = params.top_logprobs is not None and self.logprobs
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": params.top_logprobs} if asked else {}
        try:
            out = llama.create_chat_completion(
                messages=[dict(m) for m in request.messages],
                max_tokens=max(1, params.max_tokens),
                temperature=max(0.0, params.temperature),
                top_p=params.top_p,
                top_k=_TOP_K,
                min_p=_MIN_P,
                repeat_penalty=_REPEAT_PENALTY,
                seed=seed,
                stop=list(params.stop) if params.stop else [],
                **extra,
            )
        except ValueError as exc:
            if _is_context_error(exc):
                raise ContextLengthError(
                    f"the prompt does not fit the local model's context of {self.n_ctx} tokens: {exc}"
                ) from exc
            raise FatalError(f"llama.cpp rejected the request: {exc}") from exc
        except Exception as exc:
            raise FatalError(f"llama.cpp failed: {type(exc).__name__}: {exc}") from exc
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] or ""
            usage = out.get("usage") or {}
            completion_tokens = int(usage.get("completion_tokens", 0))
            return Completion(
                text=str(text),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=completion_tokens,
                finish_reason=finish_reason(
                    choice.get("finish_reason"), completion_tokens, params.max_tokens
                ),
                logprobs=parse_chat_logprobs(choice.get("logprobs")) if asked else None,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise FatalError(f"unexpected llama.cpp response shape: {exc}") from exc

    def _close_sync(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            close = getattr(llama, "close", None)
            if callable(close):
                close()

    # -- event-loop side ------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def load(self) -> None:
        """Load the model now (assembling/verifying the embedded file first); otherwise the first
        ``complete`` does it. Raises ``MissingExtra`` or ``ModelAssetError``."""
        if self._closed:
            raise FatalError("the local model backend is closed")
        await self._run(self._load_sync)

    async def complete(self, request: ChatRequest) -> Completion:
        if self._closed:
            raise FatalError("the local model backend is closed")
        result: Completion = await self._run(self._complete_sync, request)
        return result

    async def aclose(self) -> None:
        """Free the model. Waits for a generation already running; the backend is unusable after."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._close_sync)
        finally:
            self._executor.shutdown(wait=False)
