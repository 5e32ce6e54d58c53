"""The report's figures as inline SVG (they read with JavaScript off). Pure: strings in, SVG out.

Every label that comes from the data (verbs, objects) is escaped; numbers are formatted here.
Hover text is an SVG ``<title>``, which browsers show as a tooltip without any script.
"""

from __future__ import annotations

import math
from collections import Counter
from html import escape
from typing import Any

__all__ = ["PALETTE", "fig_lengths", "fig_rounds", "fig_sunburst", "histogram_bins"]

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_ORIGINAL = "#9aa4ae"
_FINAL = "#2f81f7"
_INK = "#1f2328"
_MUTED = "#59636e"
_GRID = "#d8dee4"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _svg(width: int, height: int, label: str, body: list[str], name: str) -> str:
    """``name`` is the figure's class: on a narrow screen it keeps a minimum width (and its figure
    scrolls sideways) so its labels stay readable instead of shrinking with the viewBox."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'class="{name}" role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>{"".join(body)}</svg>'
    )


def _text(
    x: float, y: float, s: str, *, size: int = 12, anchor: str = "middle", fill: str = _INK, extra: str = ""
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{extra}>'
        f"{_e(s)}</text>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def _axis(x0: float, y0: float, w: float, h: float, top: float, *, pct: bool) -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = y0 + h - h * i / 4
        out.append(
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="{_GRID}" stroke-width="1"/>'
        )
        label = f"{v:.0%}" if pct else f"{v:,.4g}"
        out.append(_text(x0 - 6, y + 4, label, size=11, anchor="end", fill=_MUTED))
    return out


def fig_rounds(rounds: dict[str, int]) -> str:
    """Fig. 2a: the share of units by rounds of evolution (accepted edits), one bar per round."""
    total = sum(rounds.values())
    w, h, x0, y0, pw, ph = 520, 300, 56, 24, 440, 220
    top = 1.0 if total == 0 else _nice_max(max(rounds.values()) / total)
    body = _axis(x0, y0, pw, ph, top, pct=True)
    n = max(1, len(rounds))
    slot = pw / n
    for i, (k, count) in enumerate(rounds.items()):
        share = 0.0 if total == 0 else count / total
        bh = ph * share / top
        x = x0 + i * slot + slot * 0.18
        bw = slot * 0.64
        body.append(
            f'<rect x="{x:.1f}" y="{y0 + ph - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
            f'fill="{_FINAL}" rx="2">'
            f"<title>{_e(f'{k} accepted edits: {count:,} units ({share:.1%})')}</title></rect>"
        )
        body.append(_text(x + bw / 2, y0 + ph - bh - 6, f"{share:.1%}", size=11))
        body.append(_text(x + bw / 2, y0 + ph + 16, k))
    body.append(_text(x0 + pw / 2, h - 10, "rounds of evolution (accepted edits)", fill=_MUTED))
    return _svg(w, h, "Figure 2a: share of units by rounds of evolution", body, "fig-2a")


def histogram_bins(
    original: Counter[int], final: Counter[int], bins: int = 20
) -> tuple[int, list[tuple[int, int]]]:
    """Equal-width bins over both histograms up to their 99th percentile (the last bin holds the
    rest): (bin width, [(original count, final count)] per bin)."""
    both = original + final
    total = sum(both.values())
    if total == 0:
        return 1, []
    seen, cap = 0, 0
    for value in sorted(both):
        seen += both[value]
        cap = value
        if seen >= 0.99 * total:
            break
    width = max(1, math.ceil((cap + 1) / bins))
    out = [[0, 0] for _ in range(bins)]
    for side, hist in ((0, original), (1, final)):
        for value, n in hist.items():
            out[min(bins - 1, value // width)][side] += n
    return width, [(a, b) for a, b in out]


def _legend(x: float, y: float) -> list[str]:
    return [
        f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{_ORIGINAL}"/>',
        _text(x + 14, y, "original", size=11, anchor="start"),
        f'<rect x="{x + 80}" y="{y - 9}" width="10" height="10" fill="{_FINAL}"/>',
        _text(x + 94, y, "final", size=11, anchor="start"),
    ]


def fig_lengths(length: dict[str, Any], original: Counter[int], final: Counter[int]) -> str:
    """Fig. 2b: mean response length before and after (medians marked), and both distributions."""
    w, h = 860, 300
    body: list[str] = []
    om, fm = length.get("original_mean") or 0.0, length.get("final_mean") or 0.0
    x0, y0, pw, ph = 56, 24, 190, 220
    top = _nice_max(max(om, fm, length.get("original_median") or 0, length.get("final_median") or 0))
    body += _axis(x0, y0, pw, ph, top, pct=False)
    for i, (name, mean, median, color) in enumerate(
        (
            ("original", om, length.get("original_median"), _ORIGINAL),
            ("final", fm, length.get("final_median"), _FINAL),
        )
    ):
        bh = ph * mean / top
        x = x0 + 20 + i * 90
        tip = f"{name}: mean {mean:,.1f} tokens, median {0 if median is None else median:,.1f}"
        body.append(
            f'<rect x="{x}" y="{y0 + ph - bh:.1f}" width="60" height="{bh:.1f}" fill="{color}" rx="2">'
            f"<title>{_e(tip)}</title></rect>"
        )
        label_y = y0 + ph - ph * max(mean, median or 0) / top - 8
        body.append(_text(x + 30, label_y, f"{mean:,.1f}", size=11))
        body.append(_text(x + 30, y0 + ph + 16, name))
        if median is not None:
            my = y0 + ph - ph * median / top
            body.append(
                f'<line x1="{x - 4}" y1="{my:.1f}" x2="{x + 64}" y2="{my:.1f}" stroke="{_INK}" '
                f'stroke-width="2" stroke-dasharray="4 3"><title>{_e(f"median {median:,.1f}")}</title></line>'
            )
    body.append(_text(x0 + pw / 2, h - 10, "mean tokens (dashed: median)", fill=_MUTED))
    body += _distribution(original, final, 330, y0, 500, ph)
    body += _legend(700, 14)
    return _svg(w, h, "Figure 2b: response length in tokens before and after refinement", body, "fig-2b")


def _distribution(
    original: Counter[int], final: Counter[int], x0: float, y0: float, pw: float, ph: float
) -> list[str]:
    width, bins = histogram_bins(original, final)
    if not bins:
        return [_text(x0 + pw / 2, y0 + ph / 2, "no lengths", fill=_MUTED)]
    top = _nice_max(max(max(a, b) for a, b in bins))
    out = _axis(x0 + 40, y0, pw - 40, ph, top, pct=False)
    slot = (pw - 40) / len(bins)
    for i, (a, b) in enumerate(bins):
        lo = i * width
        span = f"{lo:,}-{lo + width - 1:,}" if i < len(bins) - 1 else f"{lo:,}+"
        for j, (n, color, name) in enumerate(((a, _ORIGINAL, "original"), (b, _FINAL, "final"))):
            bh = ph * n / top
            x = x0 + 40 + i * slot + j * slot / 2
            out.append(
                f'<rect x="{x:.1f}" y="{y0 + ph - bh:.1f}" width="{slot / 2 - 0.5:.1f}" height="{bh:.1f}" '
                f'fill="{color}"><title>{_e(f"{name}, {span} tokens: {n:,} units")}</title></rect>'
            )
        if i % 4 == 0:
            out.append(
                _text(x0 + 40 + i * slot, y0 + ph + 16, f"{lo:,}", size=10, anchor="start", fill=_MUTED)
            )
    out.append(
        _text(x0 + 40 + (pw - 40) / 2, y0 + ph + 36, f"tokens per response (bins of {width:,})", fill=_MUTED)
    )
    return out


def _arc(cx: float, cy: float, r0: float, r1: float, a0: float, a1: float) -> str:
    """An annular sector path from angle a0 to a1 (radians, clockwise from 12 o'clock)."""
    if a1 - a0 >= 2 * math.pi - 1e-9:
        a1 = a0 + 2 * math.pi - 1e-4
    large = 1 if a1 - a0 > math.pi else 0

    def pt(r: float, a: float) -> str:
        return f"{cx + r * math.sin(a):.2f} {cy - r * math.cos(a):.2f}"

    return (
        f"M {pt(r1, a0)} A {r1} {r1} 0 {large} 1 {pt(r1, a1)} L {pt(r0, a1)} "
        f"A {r0} {r0} 0 {large} 0 {pt(r0, a0)} Z"
    )


def _label(cx: float, cy: float, r: float, a0: float, a1: float, text: str, size: int) -> str:
    mid = (a0 + a1) / 2
    x, y = cx + r * math.sin(mid), cy - r * math.cos(mid)
    deg = math.degrees(mid) - 90
    if math.degrees(mid) % 360 > 180:  # the left half: keep the text upright
        deg += 180
    return _text(x, y + size / 3, text, size=size, extra=f' transform="rotate({deg:.1f} {x:.1f} {y:.1f})"')


def fig_sunburst(verbs: list[tuple[str, int]], top: list[dict[str, Any]]) -> str:
    """Fig. 3: the most frequent root verbs (inner ring) and their most frequent direct objects
    (outer ring); a verb's sector is proportional to its count, each object's to its pair count."""
    w = h = 600
    cx, cy = w / 2, h / 2
    body: list[str] = []
    total = sum(n for _, n in verbs)
    if total == 0:
        body.append(_text(cx, cy, "no suggestions with a root verb", fill=_MUTED))
        return _svg(w, h, "Figure 3: evolving directions", body, "fig-3")
    objects: dict[str, list[tuple[str, int]]] = {}
    for item in top:
        objects.setdefault(item["verb"], []).append((item["object"], item["count"]))
    a = 0.0
    for i, (verb, n) in enumerate(verbs):
        span = 2 * math.pi * n / total
        color = PALETTE[i % len(PALETTE)]
        body.append(
            f'<path d="{_arc(cx, cy, 70, 170, a, a + span)}" fill="{color}" stroke="#fff" stroke-width="1.5">'
            f"<title>{_e(f'{verb}: {n:,} suggestions')}</title></path>"
        )
        if span > 0.12:
            body.append(_label(cx, cy, 120, a, a + span, verb, 12))
        b = a
        for obj, m in objects.get(verb, []):
            ospan = span * m / n
            body.append(
                f'<path d="{_arc(cx, cy, 172, 292, b, b + ospan)}" fill="{color}" fill-opacity="0.55" '
                f'stroke="#fff" stroke-width="1"><title>{_e(f"{verb} {obj}: {m:,}")}</title></path>'
            )
            if ospan > 0.07:
                body.append(_label(cx, cy, 232, b, b + ospan, obj, 10))
            b += ospan
        a += span
    body.append(_text(cx, cy - 4, f"{len(verbs)} verbs", size=13))
    body.append(_text(cx, cy + 14, f"{total:,} suggestions", size=11, fill=_MUTED))
    return _svg(w, h, "Figure 3: evolving directions (root verbs and their direct objects)", body, "fig-3")
