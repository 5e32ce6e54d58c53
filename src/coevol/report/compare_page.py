"""The comparison page: one self-contained HTML file for a ``coevol.compare/1`` document. Pure.

It reuses the report page's pieces (stylesheet, CSP construction, judge audit table, text cuts)
and adds the totals, a win/tie/loss bar per candidate and a per-unit browser showing both responses
side by side with a word diff and both judge answers. Every string from the data or a model is
HTML-escaped where it is written; the page's one script only hides and shows units (it never
writes markup), and the Content-Security-Policy allows nothing else to run or load.
"""

from __future__ import annotations

from html import escape
from typing import Any

from coevol.report._assets import CSS
from coevol.report.figures import _svg, _text
from coevol.report.page import MAX_TEXT, _csp_hash, _cut, _judge_table
from coevol.textdiff import word_diff

__all__ = ["COMPARE_CSS", "COMPARE_JS", "MAX_UNITS", "render_compare_page"]

MAX_UNITS = 1000
"""Units embedded per candidate: every decided-against-a-tie, unparseable or failed one first."""

COMPARE_CSS = (
    ".b-win{background:#dafbe1;border-color:#4ac26b}.b-loss{background:#ffebe9;border-color:#ff8182}"
    ".b-tie{background:#ddf4ff;border-color:#54aeff}.b-unparseable,.b-failed{background:#fff1e5;"
    "border-color:#fb8f44}.unit[hidden]{display:none}"
)

COMPARE_JS = r"""
(function () {
  "use strict";
  var sel = document.getElementById("f-outcome"), txt = document.getElementById("f-text");
  var count = document.getElementById("f-count");
  if (!sel || !txt) { return; }
  var units = Array.prototype.slice.call(document.querySelectorAll("details.unit"));
  function apply() {
    var want = sel.value, q = txt.value.toLowerCase(), shown = 0;
    units.forEach(function (u) {
      var ok = (!want || u.getAttribute("data-outcome") === want) &&
        (!q || u.textContent.toLowerCase().indexOf(q) >= 0);
      u.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + " of " + units.length + " shown";
  }
  sel.addEventListener("change", apply);
  txt.addEventListener("input", apply);
  document.getElementById("browser").hidden = false;
  apply();
})();
"""

_COLORS = {"win": "#4ac26b", "tie": "#9aa4ae", "loss": "#e15759"}
_OUTCOMES = ("win", "tie", "loss", "unparseable", "failed")


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _rate(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def _table(doc: dict[str, Any]) -> str:
    head = (
        '<tr><th>candidate</th><th class="n">win</th><th class="n">tie</th><th class="n">loss</th>'
        '<th class="n">total</th><th class="n">win rate</th><th class="n">95% interval</th>'
        '<th class="n">unparseable</th><th class="n">failed</th><th class="n">identical</th></tr>'
    )
    rows = []
    for c in doc["candidates"]:
        iv = c["interval"]
        interval = "-" if iv["low"] is None else f"{iv['low']:.1%} – {iv['high']:.1%}"
        cells = [c[k] for k in ("win", "tie", "loss", "total")]
        rows.append(
            f"<tr><td><code>{_e(c['candidate'])}</code></td>"
            + "".join(f'<td class="n">{int(v):,}</td>' for v in cells)
            + f'<td class="n">{_rate(c["win_rate"])}</td><td class="n">{_e(interval)}</td>'
            + "".join(f'<td class="n">{int(c[k]):,}</td>' for k in ("unparseable", "failed", "identical"))
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def fig_outcomes(candidates: list[dict[str, Any]]) -> str:
    """One horizontal bar per candidate: its win, tie and loss shares of the decided pairs."""
    w, x0, bar_w, row_h = 860, 220, 600, 34
    h = 40 + row_h * max(1, len(candidates))
    body: list[str] = []
    for i, c in enumerate(candidates):
        y = 20 + i * row_h
        name = str(c["candidate"])
        body.append(_text(x0 - 8, y + 17, name if len(name) <= 32 else "..." + name[-29:], anchor="end"))
        x = float(x0)
        total = c["total"] or 0
        for k in ("win", "tie", "loss"):
            share = 0.0 if total == 0 else c[k] / total
            bw = bar_w * share
            if bw > 0:
                tip = f"{name}: {k} {c[k]:,} of {total:,} ({share:.1%})"
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{bw:.1f}" height="24" fill="{_COLORS[k]}">'
                    f"<title>{_e(tip)}</title></rect>"
                )
                if bw > 40:
                    body.append(_text(x + bw / 2, y + 17, f"{share:.0%}", size=11, fill="#ffffff"))
            x += bw
    body.append(_text(x0 + bar_w / 2, h - 6, "win / tie / loss of the candidate, share of decided pairs"))
    return _svg(w, h, "win, tie and loss per candidate", body, "fig-wtl")


def _pre(label: str, text: str | None) -> str:
    return f'<div class="lbl">{_e(label)}</div><pre class="text">{_e(_cut(text) or "(none)")}</pre>'


def _diff(a: str, b: str) -> str:
    cls = {"equal": "eq", "delete": "del", "insert": "ins"}
    spans = "".join(
        f'<span class="{cls[op.kind]}">{_e(op.text)}</span>' for op in word_diff(_cut(a) or "", _cut(b) or "")
    )
    return f'<div class="lbl">word diff, baseline → candidate</div><pre class="text diff">{spans}</pre>'


def _orders(unit: dict[str, Any]) -> str:
    if not unit["orders"]:
        why = "identical responses: a tie, no call" if unit["identical"] else (unit["error"] or "not judged")
        return f'<div class="lbl">{_e(why)}</div>'
    rows, raws = [], []
    for o in unit["orders"]:
        first = "baseline" if o["order"] == "forward" else "candidate"
        verdict = o["verdict"] if o["verdict"] is not None else f"unparseable: {o['error'] or ''}"
        pos = "-" if o["position"] is None else o["position"]
        rows.append(
            f"<tr><td>{_e(o['order'])} ({_e(first)} first)</td><td>{_e(verdict)}</td>"
            f'<td class="n">{_e(pos)}</td><td class="n">{len(o["attempts"])}</td></tr>'
        )
        for i, a in enumerate(o["attempts"]):
            raws.append(_pre(f"judge, {o['order']} order, attempt {i + 1} (raw)", a["text"]))
    head = '<tr><th>order</th><th>verdict</th><th class="n">position won</th><th class="n">attempts</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>{''.join(raws)}"


def _unit(unit: dict[str, Any]) -> str:
    outcome = str(unit["outcome"])
    snippet = " ".join(str(unit["instruction"]).split())[:140]
    ident = "" if unit["id"] is None else f" · id {str(unit['id'])[:80]}"
    summary = (
        # "#N" is the row's 0-based index, as in `coevol show --index N` and the refine report
        # (the document's ``row`` is 1-based for compatibility with coevol.compare/1).
        f'<summary><span class="idx">#{int(unit["row"]) - 1}, turn {int(unit["turn"])}{_e(ident)}</span>'
        f'<span class="badge b-{_e(outcome)}">{_e(outcome)}</span><span class="snip">{_e(snippet)}</span>'
        "</summary>"
    )
    cols = (
        f'<div class="cols"><div>{_pre("baseline", unit["baseline"])}</div>'
        f"<div>{_pre('candidate', unit['candidate'])}</div></div>"
    )
    body = (
        _pre("instruction", unit["instruction"])
        + (_pre("input", unit["input"]) if unit["input"] else "")
        + cols
        + _diff(unit["baseline"], unit["candidate"])
        + _orders(unit)
    )
    return (
        f'<details class="sample unit" data-outcome="{_e(outcome)}">{summary}'
        f'<div class="body">{body}</div></details>'
    )


def select_units(units: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """A bounded selection in row order: decided (win/loss), unparseable and failed units first,
    then ties (identical ones last), up to ``limit``."""
    rank = {"win": 0, "loss": 0, "unparseable": 0, "failed": 0, "tie": 1}
    order = sorted(
        range(len(units)), key=lambda i: (rank.get(units[i]["outcome"], 0), bool(units[i]["identical"]), i)
    )
    return [units[i] for i in sorted(order[:limit])]


def _candidate_section(c: dict[str, Any], max_units: int) -> str:
    shown = select_units(c["units"], max_units)
    note = f"{len(shown):,} of {len(c['units']):,} units embedded"
    if len(shown) < len(c["units"]):
        note += " (wins, losses, unparseable and failed first, then ties); the JSON holds all"
    finding = ""
    if c["finding"]:
        finding = (
            f'<div class="finding" role="alert"><strong>Check the judge</strong>{_e(c["finding"])}</div>'
        )
    return (
        f"<h2>Candidate <code>{_e(c['candidate'])}</code></h2>{finding}"
        f'<p class="sub">rows matched by {_e(c["matched_by"])}; {int(c["rows"]):,} rows, '
        f"{int(c['bad_rows']):,} unreadable rows left out</p>"
        f"<h3>Judge audit</h3>{_judge_table(c['judge_audit'])}"
        f'<h3>Units</h3><p class="sub">{_e(note)}</p>' + "".join(_unit(u) for u in shown)
    )


def render_compare_page(doc: dict[str, Any], *, title: str, max_units: int = MAX_UNITS) -> str:
    """The whole page for a ``coevol.compare/1`` document; ``max_units`` bounds each candidate's
    browser (texts are cut at ``MAX_TEXT`` characters each)."""
    judge = doc["judge"]
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        f"style-src {_csp_hash(CSS)} {_csp_hash(COMPARE_CSS)}; script-src {_csp_hash(COMPARE_JS)}; "
        "img-src 'none'; font-src 'none'; connect-src 'none'; media-src 'none'; object-src 'none'; "
        "frame-src 'none'; base-uri 'none'; form-action 'none'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style><style>{COMPARE_CSS}</style></head>"
    )
    options = "".join(f'<option value="{k}">{k}</option>' for k in _OUTCOMES)
    controls = (
        '<noscript><p class="note">Filtering needs JavaScript; every unit below is shown without it.'
        '</p></noscript><div id="browser" hidden><div class="controls">'
        f'<label>outcome <select id="f-outcome"><option value="">all</option>{options}</select></label>'
        '<label>search <input id="f-text" type="search" placeholder="text in any field"></label>'
        '<span id="f-count"></span></div></div>'
    )
    body = (
        f'<body><main><h1>coevol compare</h1><p class="sub">baseline <code>{_e(doc["baseline"]["path"])}'
        f"</code> · rule <code>{_e(doc['rule'])}</code> · judge <code>{_e(judge['model'])}</code> "
        f"({_e(judge['kind'])}) at <code>{_e(judge['endpoint'])}</code></p>"
        "<h2>Totals</h2>"
        f'<figure class="wide">{fig_outcomes(doc["candidates"])}<figcaption>Each pair judged in both '
        "orders (forward: baseline as Assistant 1). Win rate = (win + tie/2) / total, with a 95% "
        f"Wilson interval; texts are cut at {MAX_TEXT:,} characters.</figcaption></figure>"
        f"{_table(doc)}{controls}"
        + "".join(_candidate_section(c, max_units) for c in doc["candidates"])
        + f"<script>{COMPARE_JS}</script></main></body></html>"
    )
    return head + body
