"""``coevol refine``: run a dataset file through the engine with a progress display and a summary."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from coevol.cli.exit_codes import EXIT_BUDGET, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK
from coevol.config import Config
from coevol.errors import BudgetExceeded, LLMError
from coevol.io.files import count_rows

__all__ = ["refine_command"]


def _write_dataset_info(output: Path, fmt: str, columns: set[str]) -> Path:
    """Write ``<output>.dataset_info.json``: the LLaMA-Factory entry describing the written file."""
    import orjson

    from coevol.io.formats import dataset_info_entry

    entry = dataset_info_entry(output.stem, output.name, fmt, present=columns)
    path = output.with_name(output.name + ".dataset_info.json")
    path.write_bytes(orjson.dumps(entry, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def refine_command(ns: argparse.Namespace, config: Config, err: Any) -> int:
    from coevol.cli.progress import RunDisplay
    from coevol.engine.build import build_engine
    from coevol.engine.runner import Runner, RunPaths
    from coevol.store.sqlite import Store

    if not ns.input.exists():
        err.print(f"[bold red]error:[/] input not found: {ns.input}")
        return EXIT_ERROR
    paths = RunPaths.beside(ns.input, ns.output, ns.pairs)
    if ns.dry_run:
        from coevol.cli.dryrun import estimate, format_estimate
        from coevol.prompts.templates import load_prompts

        est = estimate(
            config,
            ns.input,
            input_format=ns.input_format,
            offset=ns.offset,
            limit=ns.limit,
            prompts=load_prompts(config.prompts_dir),
            calls_per_second=ns.rate,
        )
        sys.stdout.write(format_estimate(est))
        return EXIT_OK

    async def run() -> int:
        store = Store(paths.store)
        engine = await build_engine(config, store=store)
        if engine.local and config.samples_in_flight is None:
            config.samples_in_flight = 1  # one llama.cpp worker: finish samples one by one
        total = count_rows(paths.input)
        if total is not None:
            total = max(0, total - ns.offset)
            total = min(total, ns.limit) if ns.limit is not None else total
        display = RunDisplay(err, total=total, quiet=ns.quiet)
        runner = Runner(
            config,
            engine.dispatcher,
            engine.prompts,
            paths,
            run_fingerprint=engine.fingerprint,
            input_format=ns.input_format,
            output_format=ns.output_format,
            offset=ns.offset,
            limit=ns.limit,
            retry_failed=ns.retry_failed,
            progress=display.update,
        )
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        code = EXIT_OK
        try:
            with display:
                try:
                    await runner.run(store)
                finally:
                    display.update(runner.summary, engine.dispatcher.stats, force=True)
        except BudgetExceeded:
            code = EXIT_BUDGET
        except asyncio.CancelledError:
            code = EXIT_INTERRUPTED
        except LLMError as exc:
            err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
            code = EXIT_ERROR
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await engine.aclose()
            store.close()
        display.summary(runner.summary, engine.dispatcher.stats, paths)
        if runner.summary.complete and runner.output_fmt is not None:
            info = _write_dataset_info(paths.output, runner.output_fmt, runner.output_columns)
            err.print(f"LLaMA-Factory entry: {info} (merge it into your dataset_info.json)", highlight=False)
        if ns.show and runner.summary.complete:
            from coevol.cli.show import show_trace

            show_trace(paths.trace, limit=ns.show)
        return code

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume")
        return EXIT_INTERRUPTED
