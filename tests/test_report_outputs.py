"""Issue 17: every file ``report`` and ``compare`` write passes refine's refusals (never an input, a
file of the run it reads, or a file of another running job), and a report never replaces data."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from coevol.cli import report as report_cli
from coevol.cli.main import main
from coevol.errors import OutputError
from coevol.io.guard import RunLock, check_not_running
from coevol.testing import ThreadedServer

from .compare_support import BASE_OUTPUTS, CAND_OUTPUTS, alpaca, plus_judge, write_rows
from .test_report_support import record, write_trace


def _report(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    return report_cli.run(parser.parse_args(["report", *argv, "--tokenizer", "words", "--no-directions"]))


def _run(tmp_path: Path) -> tuple[Path, Path]:
    """A finished refine run of ``data.json`` into ``refined.json`` (the trace handcrafted)."""
    data = tmp_path / "data.json"
    data.write_text('[{"instruction": "i", "output": "o"}]')
    out = tmp_path / "refined.json"
    write_trace(out, [record(0, [("assistant 2", "assistant 1")])])
    out.write_text('[{"instruction": "i", "output": "refined"}]')
    return data, out


def test_report_o_refined_html_never_replaces_the_refined_dataset(tmp_path: Path) -> None:
    _, out = _run(tmp_path)
    before = out.read_bytes()
    with pytest.raises(OutputError, match=r"JSON document .*refined\.json: it is the run.s output"):
        _report(str(out), "-o", str(tmp_path / "refined.html"))
    assert out.read_bytes() == before
    assert not (tmp_path / "refined.html").exists()


def test_report_o_named_after_the_input_never_replaces_the_input(tmp_path: Path) -> None:
    data, out = _run(tmp_path)
    before = data.read_bytes()
    with pytest.raises(OutputError, match="not a coevol report"):
        _report(str(out), "-o", str(tmp_path / "data.html"))
    assert data.read_bytes() == before


@pytest.mark.parametrize("suffix", ["", ".trace.jsonl", ".coevol.db", ".rejects.jsonl", ".lock"])
def test_the_page_is_never_a_file_of_the_run_it_reads(tmp_path: Path, suffix: str) -> None:
    _, out = _run(tmp_path)
    target = Path(f"{out}{suffix}")
    with pytest.raises(OutputError, match="refusing to write the page"):
        _report(str(out), "-o", str(target))


def test_a_report_is_rewritten_and_its_names_are_shown_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = _run(tmp_path)
    page = tmp_path / "my report; rm -rf ~.html"
    assert _report(str(out), "-o", str(page)) == 0
    shown_before: list[str] = []
    from coevol.io.writers import write_whole as real

    def spy(path: Path, data: bytes) -> None:
        shown_before.append(capsys.readouterr().err)
        real(path, data)

    monkeypatch.setattr("coevol.cli.report.write_whole", spy)
    assert _report(str(out), "-o", str(page)) == 0  # a previous report (page and JSON) is replaced
    assert f"json:   {page.with_suffix('.json')}" in shown_before[0]
    err = capsys.readouterr().err
    assert f"xdg-open {shlex.quote(str(page))}" in err


def test_a_file_of_another_running_job_is_refused(tmp_path: Path) -> None:
    _, out = _run(tmp_path)
    other = tmp_path / "other.jsonl"
    with RunLock(tmp_path / "other.jsonl.lock", "coevol refine x -o other.jsonl"):
        for name in ("other.jsonl", "other.jsonl.trace.jsonl.partial", "other.jsonl.coevol.db"):
            with pytest.raises(
                OutputError, match=r"another (running coevol job|coevol run is already writing)"
            ):
                _report(str(out), "-o", str(tmp_path / name))
        with pytest.raises(OutputError, match=r"already writing this output \(pid \d+: coevol refine x"):
            check_not_running([other])
        with pytest.raises(
            OutputError, match=r"other.jsonl.coevol.db is a file of another running coevol job"
        ):
            check_not_running([tmp_path / "other.jsonl.coevol.db"])
    check_not_running([other])  # released: free again
    assert not (tmp_path / "x.lock").exists()  # probing never creates a lock file


@pytest.fixture
def server() -> ThreadedServer:  # type: ignore[misc]
    with ThreadedServer(responder=plus_judge) as s:
        yield s


def test_report_of_a_comparison_never_replaces_its_baseline(tmp_path: Path, server: ThreadedServer) -> None:
    base = write_rows(tmp_path / "base.jsonl", alpaca(BASE_OUTPUTS))
    cand = write_rows(tmp_path / "cand.jsonl", alpaca(CAND_OUTPUTS))
    result = tmp_path / "RESULT.json"
    flags = ["--base-url", server.base_url, "--model", "m", "-q"]
    assert main(["compare", str(base), str(cand), "-o", str(result), *flags]) == 0
    before = base.read_bytes()
    with pytest.raises(OutputError, match=r"the compared file .*base\.jsonl"):
        _report(str(result), "-o", str(base))
    (tmp_path / "unrelated.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a coevol report"):
        _report(str(result), "-o", str(tmp_path / "unrelated.txt"))
    assert base.read_bytes() == before
    assert (tmp_path / "unrelated.txt").read_text() == "mine"
    # compare's own result is refused when it is a running job's output
    with RunLock(tmp_path / "busy.jsonl.lock", "coevol refine a -o busy.jsonl"):
        code = main(["compare", str(base), str(cand), "-o", str(tmp_path / "busy.jsonl"), *flags])
    assert code == 1
    assert not (tmp_path / "busy.jsonl").exists()


def test_two_runs_sharing_a_pairs_file_or_naming_the_others_output_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "data.jsonl", alpaca(BASE_OUTPUTS))
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-q"]
    pairs, first = tmp_path / "pairs.jsonl", tmp_path / "first.jsonl"
    with RunLock(tmp_path / "first.jsonl.lock", "coevol refine data -o first.jsonl", also=[pairs]):
        for extra in (["--pairs", str(pairs)], ["--pairs", str(first)]):
            code = main(["refine", str(data), "-o", str(tmp_path / "second.jsonl"), *extra, *flags])
            assert code == 1
            assert "another coevol run is already writing this output" in capsys.readouterr().err
        assert main(["refine", str(data), "-o", str(pairs), *flags]) == 1  # its pairs as an output
    assert not (tmp_path / "second.jsonl").exists() and not pairs.exists()


def test_a_cache_that_is_the_input_is_named_as_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "in.jsonl", alpaca(BASE_OUTPUTS))
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-q"]
    assert main(["refine", str(data), "-o", str(tmp_path / "o.jsonl"), "--cache", str(data), *flags]) == 1
    err = capsys.readouterr().err
    assert f"--cache {data} is the input file" in err and "the output" not in err
