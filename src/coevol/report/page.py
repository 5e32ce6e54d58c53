"""The report page: one self-contained HTML file. Pure: the report, the samples, a string out.

Safety with hostile data: every string from the data or a model is HTML-escaped where the page
writes it, or travels as JSON in a ``<script type="application/json">`` with ``<``, ``>``, ``&``
and U+2028/9 escaped, and the page's one script renders it with ``textContent``. A
Content-Security-Policy meta tag allows nothing from the network and only the page's own style
and script (by hash), so an injected ``<script>`` or ``onerror=`` handler could not run even if
escaping failed.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from html import escape
from typing import Any

import orjson

from coevol.audit import judge_finding
from coevol.domain import Answer, IterationTrace, JudgeTrace, TraceRecord, TreeTrace, TurnTrace
from coevol.report._assets import CSS, JS
from coevol.report.figures import fig_lengths, fig_rounds, fig_sunburst
from coevol.textdiff import word_diff

__all__ = ["INSTALL_LINE", "MAX_TEXT", "embed_json", "render_page", "sample_view"]

INSTALL_LINE = "pip install 'coevol[report]'"
MAX_TEXT = 20_000
"""Characters of one text embedded per field; the rest is cut with a stated marker."""


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def embed_json(value: Any) -> str:
    """JSON that is inert inside a ``<script>`` element: no ``</script>``, no ``<!--``, no entity,
    no JavaScript line terminator can appear in it."""
    text = orjson.dumps(value).decode()
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n[... cut by the report: {len(text) - MAX_TEXT:,} more characters]"


def _answer(a: Answer | None) -> list[Any] | None:
    return None if a is None else [_cut(a.text), a.finish_reason]


def _ops(a: str, b: str) -> list[list[str]]:
    sign = {"equal": "=", "delete": "-", "insert": "+"}
    return [[sign[op.kind], op.text] for op in word_diff(_cut(a) or "", _cut(b) or "")]


def _judge(j: JudgeTrace | None) -> dict[str, Any] | None:
    if j is None:
        return None
    return {
        "orders": [
            {
                "order": o.order,
                "verdict": o.verdict,
                "scores": None if o.scores is None else [o.scores[0], o.scores[1]],
                "error": o.error,
                "attempts": [_answer(a) for a in o.attempts],
                "probs": None if o.probs is None else o.probs.to_dict(),
            }
            for o in j.orders
        ],
        "skipped_reverse": j.skipped_reverse,
        "prob_mean": j.prob_mean,
        "margin": j.margin,
    }


def _iteration(it: IterationTrace) -> dict[str, Any]:
    d = it.debate
    return {
        "n": it.iteration,
        "accepted": it.accepted,
        "debate": None
        if d is None
        else [
            _answer(x) for x in (d.positive_stage1, d.critical_stage1, d.positive_stage2, d.critical_stage2)
        ],
        "suggestions": _answer(it.suggestions),
        "edit": _answer(it.edit),
        "edited_diff": None if it.edited is None else _ops(it.previous, it.edited),
        "judge": _judge(it.judge),
    }


def _turn(t: TurnTrace) -> dict[str, Any]:
    return {
        "turn": t.turn,
        "instruction": _cut(t.instruction),
        "input": _cut(t.input),
        "original": _cut(t.original),
        "final": _cut(t.final),
        "diff": _ops(t.original, t.final),
        "stop": t.stop_reason.value,
        "failure": None if t.failure is None else f"{t.failure.type}: {t.failure.message}",
        "iterations": [_iteration(it) for it in t.iterations],
        "tree": None if t.tree is None else _tree(t.tree),
    }


def _tree(tree: TreeTrace) -> dict[str, Any]:
    """The tree for the sample browser: each node as [id, parent, depth, value, dropped, response]."""
    return {
        "path": list(tree.path),
        "nodes": [
            [n.id, n.parent, n.depth, n.value, n.dropped, None if n.response is None else n.response[:400]]
            for n in tree.nodes
        ],
    }


def sample_view(record: TraceRecord) -> dict[str, Any]:
    """What the page's sample browser shows of one record (texts cut at ``MAX_TEXT``)."""
    first = record.turns[0].instruction if record.turns else ""
    snippet = " ".join(first.split())[:140]
    return {
        "index": record.index,
        "line": record.line,
        "id": None if record.id is None else str(record.id)[:200],
        "status": record.status.value,
        "accepted": record.accepted_edits,
        "failure": None
        if record.failure is None
        else f"{record.failure.type}: {record.failure.message}"[:2000],
        "snippet": snippet,
        "turns": [_turn(t) for t in record.turns],
    }


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def _num(v: Any, fmt: str = ",") -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and fmt == ",":
        return f"{v:,.2f}"
    return format(v, fmt)


def _cards(report: dict[str, Any]) -> str:
    st = report["status"]
    accepted = sum(int(k) * n for k, n in report["rounds"].items())
    usage = report["usage"]
    items = [
        ("rows", report["rows"]),
        ("units refined (assistant turns)", report["units"]),
        ("refined", st["refined"]),
        ("kept", st["kept"]),
        ("failed", st["failed"]),
        ("rejected", st["rejected"]),
        ("accepted edits", accepted),
        ("calls", usage["calls"]),
        ("cache hits", usage["cached"]),
        ("cost", None if usage["cost"] is None else _dollars(usage["cost"])),
        ("wall time", None if report["wall_time_s"] is None else _duration(report["wall_time_s"])),
    ]
    cells = "".join(
        f'<div class="card"><div class="v">{_e(_num(v))}</div><div class="k">{_e(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{cells}</div>'


def _dollars(v: Any) -> str:
    return "-" if v is None else f"${v:,.4f}"


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _roles_table(report: dict[str, Any]) -> str:
    by_role = report["usage"]["by_role"]
    models = report["models"]
    roles = sorted(set(by_role) | set(models))
    if not roles:
        return '<p class="note">No calls are recorded in the trace.</p>'
    rows = []
    for r in roles:
        u = by_role.get(r, {})
        rows.append(
            f"<tr><td>{_e(r)}</td><td>{_e(', '.join(models.get(r, [])) or '-')}</td>"
            f'<td class="n">{_e(_num(u.get("calls")))}</td>'
            f'<td class="n">{_e(_num(u.get("prompt_tokens")))}</td>'
            f'<td class="n">{_e(_num(u.get("completion_tokens")))}</td>'
            f'<td class="n">{_e(_dollars(u.get("cost")))}</td></tr>'
        )
    head = (
        '<tr><th>role</th><th>model</th><th class="n">calls</th><th class="n">prompt tokens</th>'
        '<th class="n">completion tokens</th><th class="n">cost</th></tr>'
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _judge_table(j: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{v:.1%}"

    n = j["comparisons"]

    def share(v: int) -> str:
        return "" if n == 0 else f"{v / n:.1%}"

    rows = [
        ("comparisons (edits, or tree children, judged in both orders)", _num(n), ""),
        (
            "consistent: the same response preferred in both orders, or two ties",
            _num(j["consistent"]),
            share(j["consistent"]),
        ),
        (
            "primacy-preferred: position 1 chosen in both, or in one with a tie",
            _num(j["primacy"]),
            share(j["primacy"]),
        ),
        (
            "recency-preferred: position 2 chosen in both, or in one with a tie",
            _num(j["recency"]),
            share(j["recency"]),
        ),
        ("position consistency", pct(j["position_consistency"]), "1 is ideal"),
        (
            "preference fairness (−1 primacy … 0 fair … +1 recency)",
            "-" if j["preference_fairness"] is None else f"{j['preference_fairness']:+.2f}",
            "",
        ),
        ("comparisons with a tie in an order", _num(j["ties"]), share(j["ties"])),
        ("judgments with a verdict left unparseable", _num(j["unparseable"]), ""),
        ("judgments made in one order only (early exit)", _num(j.get("single_order")), ""),
        (
            "--judge prob: mean position bias in probability (mean P(position 1) − 0.5)",
            "-" if j.get("prob_position_bias") is None else f"{j['prob_position_bias']:+.3f}",
            "0 is fair",
        ),
        (
            "accepted edits longer than what they replaced",
            pct(j["accepted_longer"]),
            f"of {j.get('accepted', 0):,}",
        ),
    ]
    body = "".join(
        f'<tr><td>{_e(k)}</td><td class="n">{_e(v)}</td><td class="n">{_e(s)}</td></tr>' for k, v, s in rows
    )
    return f"<table>{body}</table>"


def _missing(report: dict[str, Any], part: str) -> str | None:
    for m in report.get("missing", []):
        if m.get("part") == part:
            return (
                f'<p class="note">Not computed: {_e(m.get("message", ""))}. '
                "Install it and run <code>coevol report</code> again.</p>"
            )
    return None


def _figures(
    report: dict[str, Any], original: Counter[int], final: Counter[int], verbs: list[tuple[str, int]]
) -> str:
    length = report["length"]
    fig2a = (
        f"<figure>{fig_rounds(report['rounds'])}<figcaption>Figure 2a. Share of the {report['units']:,} "
        "refined units by rounds of evolution: how many edits the judge accepted (0 = the original was "
        "kept).</figcaption></figure>"
    )
    lengths = _missing(report, "length") or fig_lengths(length, original, final)
    fig2b = (
        f'<figure class="wide">{lengths}<figcaption>Figure 2b. Response length in '
        f"{_e(length['tokenizer'])} tokens, original against final: means (medians dashed) and the "
        "distributions. Hover a bar for its numbers.</figcaption></figure>"
    )
    d = report["directions"]
    if d is None:
        sun = _missing(report, "directions") or '<p class="note">Directions were not computed.</p>'
        caption = "Figure 3. Evolving directions."
    else:
        sun = fig_sunburst(verbs, d["top"])
        sampled = (
            f"{d['suggestions']:,} suggestion lines"
            if d["sampled"] == d["suggestions"]
            else f"a uniform random sample of {d['sampled']:,} of the {d['suggestions']:,} suggestion lines "
            "(seed 0; --directions-lines 0 parses all)"
        )
        caption = (
            "Figure 3. Evolving directions: the root verb (inner ring) and direct object (outer ring) "
            f"of each advisor suggestion; {sampled}: {d['parsed']:,} with a root verb, {d['verbs']:,} "
            f"distinct verbs and {d['pairs']:,} verb-object pairs. The 20 most frequent verbs and their "
            "4 most frequent objects are drawn; hover for counts."
        )
    fig3 = (
        f'<figure class="wide"><div class="sun"><div class="sunfig">{sun}</div>{_pairs_table(d)}</div>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )
    return f'<div class="figs">{fig2a}{_rounds_table(report)}{_tree_table(report)}{fig2b}{fig3}</div>'


def _pairs_table(d: dict[str, Any] | None) -> str:
    if not d or not d["top"]:
        return ""
    rows = "".join(
        f'<tr><td>{_e(t["verb"])}</td><td>{_e(t["object"])}</td><td class="n">{t["count"]:,}</td></tr>'
        for t in d["top"][:24]
    )
    return (
        '<div class="pairs"><table><tr><th>verb</th><th>object</th><th class="n">count</th></tr>'
        f"{rows}</table></div>"
    )


def _tree_table(report: dict[str, Any]) -> str:
    """For tree runs, beside Fig. 2: the share of samples by the depth their search reached, and
    how many passed the critic's gate (the original already, or a node written)."""
    tree = report.get("tree")
    if not tree:
        return ""
    units = max(tree["units"], 1)
    rows = "".join(
        f'<tr><td>{_e(depth)}</td><td class="n">{n:,}</td><td class="n">{n / units:.0%}</td></tr>'
        for depth, n in tree["depth"].items()
    )
    found = tree["passed"] - tree["root_passes"]
    return (
        '<figure><table class="tree-depth"><tr><th>depth reached</th><th class="n">samples</th>'
        f'<th class="n">share</th></tr>{rows}</table>'
        f"<p>Final pass rate: <strong>{tree['pass_rate']:.0%}</strong> ({tree['passed']:,} of "
        f"{tree['units']:,}: {tree['root_passes']:,} originals already passed, {found:,} found in the "
        "tree).</p><figcaption>Tree search: the share of the samples by the depth the search reached "
        "(0: the original passed or nothing could be valued), and the share whose result passed the "
        "gate.</figcaption></figure>"
    )


def _rounds_table(report: dict[str, Any]) -> str:
    total = report["units"]
    rows = "".join(
        f'<tr><td>{_e(k)}</td><td class="n">{n:,}</td>'
        f'<td class="n">{"" if not total else f"{n / total:.1%}"}</td></tr>'
        for k, n in report["rounds"].items()
    )
    stops = "".join(
        f'<tr><td><code>{_e(k)}</code></td><td class="n">{n:,}</td></tr>'
        for k, n in report["stop_reasons"].items()
    )
    return (
        '<figure><table><tr><th>accepted edits</th><th class="n">units</th><th class="n">share</th></tr>'
        f'{rows}</table><table><tr><th>why the loop stopped</th><th class="n">units</th></tr>{stops}</table>'
        "<figcaption>The numbers behind Figure 2a, and each unit's stop reason.</figcaption></figure>"
    )


def _browser(report: dict[str, Any], selection: str) -> str:
    statuses = "".join(f'<option value="{s}">{s}</option>' for s in ("refined", "kept", "failed"))
    rounds = "".join(f'<option value="{_e(k)}">{_e(k)}</option>' for k in report["rounds"])
    return (
        f'<p class="sub">{_e(selection)}</p>'
        '<noscript><p class="note">The sample browser needs JavaScript; everything above it does not.'
        "</p></noscript>"
        '<div id="browser" hidden><div class="controls">'
        f'<label>status <select id="f-status"><option value="">all</option>{statuses}</select></label>'
        f'<label>accepted edits <select id="f-rounds"><option value="">all</option>{rounds}</select></label>'
        '<label>search <input id="f-text" type="search" placeholder="text in any field"></label>'
        '<span id="f-count"></span></div><div id="samples"></div>'
        '<p><button id="f-more" type="button" hidden>show more</button></p></div>'
    )


def render_page(
    report: dict[str, Any],
    samples: list[dict[str, Any]],
    *,
    title: str,
    selection: str,
    original: Counter[int],
    final: Counter[int],
    verbs: list[tuple[str, int]],
    notes: tuple[str, ...] = (),
) -> str:
    """The whole page. ``report`` is the JSON document, ``samples`` the ``sample_view``s to embed,
    ``original``/``final`` the length histograms and ``verbs`` the inner ring of Fig. 3 (verb,
    count); ``notes`` are plain-text remarks (e.g. unreadable trace lines)."""
    finding = judge_finding(report["judge"])
    top = ""
    if finding is not None:
        top = f'<div class="finding" role="alert"><strong>Check the judge</strong>{_e(finding)}</div>'
    top += "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    data = embed_json({"samples": samples})
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        f"style-src {_csp_hash(CSS)}; script-src {_csp_hash(JS)}; img-src 'none'; font-src 'none'; "
        "connect-src 'none'; media-src 'none'; object-src 'none'; frame-src 'none'; base-uri 'none'; "
        "form-action 'none'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
    )
    body = (
        f'<body><main><h1>coevol report</h1><p class="sub">{_e(title)} · tokenizer '
        f"<code>{_e(report['length']['tokenizer'])}</code></p>{top}"
        f"<h2>Summary</h2>{_cards(report)}{_roles_table(report)}"
        f"<h2>Rounds of evolution and response length</h2>{_figures(report, original, final, verbs)}"
        f'<h2>Judge audit</h2><p class="sub">Position bias, in the terms of Shi et al. 2024 '
        "(“Judging the Judges”): in the forward order the previous response is Assistant 1 "
        f"(position 1), in the reverse order the edited one is.</p>{_judge_table(report['judge'])}"
        f"<h2>Samples</h2>{_browser(report, selection)}"
        f'<script type="application/json" id="samples-data">{data}</script>'
        f"<script>{JS}</script></main></body></html>"
    )
    return head + body
