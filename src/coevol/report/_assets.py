# ruff: noqa: E501  (minified-style CSS and JS lines)
"""The page's one stylesheet and one script, kept as strings so the package needs no data files.

The script only filters, searches and renders the embedded samples; it writes every string from
the data with ``textContent`` (never ``innerHTML``), so nothing in a row can become markup.
"""

__all__ = ["CSS", "JS"]

CSS = r"""
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#ffffff;--panel:#f6f8fa;--accent:#0969da;--ins:#dafbe1;--ins-fg:#116329;--del:#ffebe9;--del-fg:#82071e;--warn:#fff8c5;--warn-line:#d4a72c}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:36px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:16px 0 6px}
.sub{color:var(--muted);margin:0 0 18px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,"SF Mono",Menlo,Consolas,"Liberation Mono",monospace;font-size:13px}
.finding{background:var(--warn);border:1px solid var(--warn-line);border-radius:8px;padding:12px 16px;margin:16px 0}
.finding strong{display:block;margin-bottom:4px}
.note{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:10px 0;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:12px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:22px;font-weight:600}
.card .k{color:var(--muted);font-size:13px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:5px 12px 5px 0;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:18px}
figure{margin:0;background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:12px}
figcaption{color:var(--muted);font-size:13px;margin-top:6px}
figure.wide{grid-column:1/-1}
.sun{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.sunfig{flex:0 1 560px;min-width:300px}
.pairs{flex:1 1 260px;max-height:560px;overflow:auto}
svg text{font-family:-apple-system,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px;position:sticky;top:0;z-index:2}
.controls label{font-size:14px;color:var(--muted)}
.controls select,.controls input{font:inherit;padding:4px 8px;border:1px solid var(--line);border-radius:6px;background:#fff}
.controls input{min-width:260px}
#f-count{margin-left:auto;color:var(--muted);font-size:14px}
.sample{border:1px solid var(--line);border-radius:8px;margin:8px 0;background:#fff}
.sample>summary{cursor:pointer;padding:8px 12px;list-style-position:inside}
.sample>summary .idx{font-weight:600;margin-right:8px}
.sample>summary .snip{color:var(--muted)}
.body{padding:4px 14px 14px;border-top:1px solid var(--line)}
.badge{display:inline-block;font-size:12px;border-radius:10px;padding:0 8px;margin-right:6px;border:1px solid var(--line);background:var(--panel)}
.b-refined{background:#dafbe1;border-color:#4ac26b}.b-kept{background:#ddf4ff;border-color:#54aeff}.b-failed{background:#ffebe9;border-color:#ff8182}.b-rejected{background:#fff1e5;border-color:#fb8f44}
.b-cut{background:var(--warn);border-color:var(--warn-line)}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px 10px;margin:4px 0 8px;max-height:420px;overflow:auto}
.diff .del{background:var(--del);color:var(--del-fg);text-decoration:line-through}
.diff .ins{background:var(--ins);color:var(--ins-fg)}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.iter{border-left:3px solid var(--line);padding-left:12px;margin:12px 0}
.iter.acc{border-left-color:#4ac26b}
.lbl{font-size:13px;color:var(--muted);margin-top:6px}
button{font:inherit;padding:4px 12px;border:1px solid var(--line);border-radius:6px;background:var(--panel);cursor:pointer}
@media (max-width:800px){.figs,.cols{grid-template-columns:1fr}}
table{display:block;max-width:100%;overflow-x:auto}
.figs>*,.cols>*{min-width:0}
figure{overflow-x:auto}
.tree{margin:10px 0;padding:8px 10px;border:1px solid var(--line);border-radius:8px;background:var(--panel)}
.tree .lvl{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:4px 0}
.tree .d{color:var(--muted);font-size:13px;min-width:64px}
.tnode{font-size:13px;padding:2px 8px;border-radius:12px;border:2px solid transparent;font-variant-numeric:tabular-nums}
.tv0{background:#ffebe9}.tv1{background:#ffd8b5}.tv2{background:#fff8c5}.tv3{background:#d8f3dc}.tv4{background:#aceebb}.tvn{background:#eaeef2;color:var(--muted)}
.tnode.onpath{border-color:var(--accent);font-weight:600}
.tnode.drop{text-decoration:line-through}
@media (max-width:600px){main{padding:16px 12px 48px}svg.fig-2a{min-width:440px}svg.fig-2b{min-width:780px}svg.fig-3{min-width:520px}svg.fig-wtl{min-width:760px}.controls input{min-width:0;flex:1 1 160px}}
"""

JS = r"""
(function () {
  "use strict";
  var node = document.getElementById("samples-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);
  var samples = data.samples;
  var list = document.getElementById("samples");
  var fStatus = document.getElementById("f-status");
  var fRounds = document.getElementById("f-rounds");
  var fText = document.getElementById("f-text");
  var count = document.getElementById("f-count");
  var more = document.getElementById("f-more");
  var PAGE = 50;
  var matches = [];
  var shown = 0;
  var KIND = { "=": "eq", "-": "del", "+": "ins" };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function add(parent, child) { parent.appendChild(child); return child; }
  function badge(text, cls) { return el("span", "badge " + (cls || ""), text); }

  function haystack(s) {
    if (s.hay === undefined) {
      var parts = [];
      var walk = function (v) {
        if (typeof v === "string") { parts.push(v); }
        else if (Array.isArray(v)) { v.forEach(walk); }
        else if (v !== null && typeof v === "object") { Object.keys(v).forEach(function (k) { walk(v[k]); }); }
        else if (v !== null && v !== undefined) { parts.push(String(v)); }
      };
      walk(s.data);
      s.hay = parts.join("\n").toLowerCase();
    }
    return s.hay;
  }

  function block(parent, label, text, cut) {
    var l = add(parent, el("div", "lbl", label));
    if (cut) { l.appendChild(document.createTextNode(" ")); l.appendChild(badge("cut off", "b-cut")); }
    add(parent, el("pre", "text", text === null || text === undefined ? "(none)" : text));
  }

  function diff(parent, ops) {
    var pre = add(parent, el("pre", "text diff"));
    ops.forEach(function (op) { add(pre, el("span", KIND[op[0]] || "eq", op[1])); });
  }

  function answer(parent, label, a) {
    if (!a) { return; }
    block(parent, label, a[0], a[1] === "length");
  }

  function judge(parent, j) {
    if (!j) { return; }
    var t = add(parent, el("table"));
    var h = add(t, el("tr"));
    ["order", "parsed verdict", "scores (previous, edited)", "p('1'), p('2') at the digit", "attempts"].forEach(function (x) { add(h, el("th", null, x)); });
    j.orders.forEach(function (o) {
      var r = add(t, el("tr"));
      add(r, el("td", null, o.order));
      add(r, el("td", null, o.verdict === null ? "unparseable" + (o.error ? ": " + o.error : "") : o.verdict));
      add(r, el("td", null, o.scores === null ? "-" : o.scores.map(function (s) { return +s.toFixed(3); }).join(", ")));
      add(r, el("td", null, !o.probs ? "-" : o.probs.token === null ? "no digit: 0.5 each" : o.probs.p1.toFixed(3) + ", " + o.probs.p2.toFixed(3)));
      add(r, el("td", "n", o.attempts.length));
    });
    j.orders.forEach(function (o) {
      if (o.probs && o.probs.top.length) {
        add(parent, el("div", "lbl", o.order + " order, top_logprobs at the digit: " + o.probs.top.map(function (x) { return JSON.stringify(x[0]) + " " + x[1].toFixed(2); }).join(", ")));
      }
    });
    if (j.prob_mean !== null && j.prob_mean !== undefined) {
      add(parent, el("div", "lbl", "mean P(edited preferred) over both orders: " + j.prob_mean.toFixed(3) + " (kept above " + (0.5 + j.margin).toFixed(3) + ")"));
    }
    j.orders.forEach(function (o) {
      o.attempts.forEach(function (a, i) { answer(parent, "judge, " + o.order + " order, attempt " + (i + 1) + " (raw)", a); });
    });
    if (j.skipped_reverse) { add(parent, el("div", "lbl", "reverse order skipped: the forward order already rejected the edit")); }
  }

  function iteration(parent, it) {
    var box = add(parent, el("div", "iter" + (it.accepted ? " acc" : "")));
    var h = add(box, el("h3", null, "Iteration " + it.n + " "));
    h.appendChild(badge(it.accepted ? "edit accepted" : "edit not accepted", it.accepted ? "b-refined" : "b-kept"));
    if (it.debate) {
      var cols = add(box, el("div", "cols"));
      var left = add(cols, el("div"));
      var right = add(cols, el("div"));
      answer(left, "positive debater, stage 1", it.debate[0]);
      answer(right, "critical debater, stage 1", it.debate[1]);
      answer(left, "positive debater, stage 2", it.debate[2]);
      answer(right, "critical debater, stage 2", it.debate[3]);
    }
    answer(box, "advisor's suggestions", it.suggestions);
    answer(box, "editor's answer (raw)", it.edit);
    if (it.edited_diff) { add(box, el("div", "lbl", "edited response vs the previous one")); diff(box, it.edited_diff); }
    judge(box, it.judge);
  }

  function turn(parent, t, many) {
    if (many) { add(parent, el("h3", null, "Assistant turn " + t.turn)); }
    block(parent, "instruction", t.instruction);
    if (t.input) { block(parent, "input", t.input); }
    var cols = add(parent, el("div", "cols"));
    var a = add(cols, el("div"));
    var b = add(cols, el("div"));
    block(a, "original response", t.original);
    block(b, "final response", t.final);
    add(parent, el("div", "lbl", "word diff, original to final"));
    diff(parent, t.diff);
    var stop = add(parent, el("div", "lbl", "why the loop stopped: "));
    add(stop, el("code", null, t.stop + (t.failure ? " (" + t.failure + ")" : "")));
    t.iterations.forEach(function (it) { iteration(parent, it); });
    if (t.tree) { tree(parent, t.tree); }
  }

  function tree(parent, tr) {
    var box = add(parent, el("div", "tree"));
    add(box, el("div", "lbl", "tree search: nodes by depth, coloured by value V (red 0 to green 1), the path to the result outlined; hover a node for its response"));
    var onPath = {};
    tr.path.forEach(function (id) { onPath[id] = true; });
    var depths = [];
    tr.nodes.forEach(function (n) { (depths[n[2]] = depths[n[2]] || []).push(n); });
    depths.forEach(function (nodes, depth) {
      var row = add(box, el("div", "lvl"));
      add(row, el("span", "d", "depth " + depth));
      nodes.forEach(function (n) {
        var v = n[3];
        var cls = "tnode " + (v === null ? "tvn" : "tv" + Math.min(4, Math.floor(v * 5))) + (onPath[n[0]] ? " onpath" : "") + (n[4] ? " drop" : "");
        var chip = add(row, el("span", cls, "#" + n[0] + " " + (v === null ? "-" : v.toFixed(2))));
        chip.title = (n[4] ? "dropped: " + n[4] + "\n" : "") + (n[5] === null ? "(no response)" : n[5]);
      });
    });
    add(box, el("div", "lbl", "path: " + tr.path.map(function (id) { return "#" + id; }).join(" > ")));
  }

  function render(s) {
    var d = s.data;
    var det = el("details", "sample");
    var sum = add(det, el("summary"));
    add(sum, el("span", "idx", "#" + d.index));
    add(sum, badge(d.status, "b-" + d.status));
    add(sum, badge(d.accepted + " accepted"));
    if (d.id !== null) { add(sum, badge("id " + d.id)); }
    add(sum, el("span", "snip", d.snippet));
    det.addEventListener("toggle", function () {
      if (!det.open || det.dataset.done) { return; }
      det.dataset.done = "1";
      var body = add(det, el("div", "body"));
      add(body, el("div", "lbl", "line " + d.line + (d.failure ? " · failure: " + d.failure : "")));
      d.turns.forEach(function (t) { turn(body, t, d.turns.length > 1); });
      if (d.turns.length === 0) { add(body, el("p", "lbl", "No assistant turn was refined.")); }
    });
    return det;
  }

  function page() {
    var end = Math.min(matches.length, shown + PAGE);
    for (var i = shown; i < end; i++) { list.appendChild(render(matches[i])); }
    shown = end;
    more.hidden = shown >= matches.length;
  }

  function apply() {
    var st = fStatus.value;
    var rd = fRounds.value;
    var q = fText.value.trim().toLowerCase();
    matches = samples.filter(function (s) {
      if (st && s.data.status !== st) { return false; }
      if (rd !== "" && String(s.data.accepted) !== rd) { return false; }
      return !q || haystack(s).indexOf(q) !== -1;
    });
    while (list.firstChild) { list.removeChild(list.firstChild); }
    shown = 0;
    count.textContent = matches.length + " of " + samples.length + " embedded samples";
    page();
  }

  samples = samples.map(function (d) { return { data: d }; });
  var timer = null;
  fStatus.addEventListener("change", apply);
  fRounds.addEventListener("change", apply);
  fText.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 150); });
  more.addEventListener("click", page);
  document.getElementById("browser").hidden = false;
  apply();
})();
"""
