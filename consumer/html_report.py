"""A self-contained HTML report of scored series (`score --report`, `evaluate --report`): one inline SVG
per series with the values, the forecast (and its band, expected +- scale, where the scores carry a
scale), label windows and flagged points, plus one strip of ticks per set of flags. No script, no
stylesheet or font from the network: the file opens the same offline, years later.

Long series are drawn from per-pixel min/max buckets (every spike stays visible); flags and windows are
drawn at their exact positions.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

__all__ = ["SeriesPlot", "render_report"]

_W, _H, _PAD_L, _PAD_R, _PAD_T, _STRIP = 1100, 260, 70, 10, 24, 12
_BUCKETS = 1500  # drawn points per line, at most
_COLOURS = ("#d62728", "#9467bd", "#ff7f0e", "#2ca02c", "#8c564b")


@dataclass(frozen=True)
class SeriesPlot:
    """What one series' plot shows (arrays aligned with its rows)."""

    title: str
    event_ms: np.ndarray  # int64 [T]
    values: np.ndarray  # [T]
    expected: np.ndarray | None = None  # [T] forecast each row was compared with (NaN where none)
    scale: np.ndarray | None = None  # [T] band half-width around `expected`
    flags: Sequence[tuple[str, np.ndarray]] = ()  # (label, bool [T]); the first is also drawn on the line
    windows_ms: Sequence[tuple[int, int]] = ()  # label windows (event ms, inclusive)
    probation_end_ms: int | None = None  # rows before this were learnt from, not scored (NAB's probation)
    notes: Sequence[str] = field(default_factory=tuple)


def render_report(title: str, plots: Sequence[SeriesPlot], *, summary: Sequence[tuple[str, str]] = ()) -> str:
    """The whole HTML document: a title, a summary table (``summary``: label, value) and one figure per plot."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary)
    figures = "\n".join(_figure(i, p) for i, p in enumerate(plots))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }}
figure {{ margin: 0 0 22px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
table.summary th {{ text-align: left; padding-right: 12px; }} .notes {{ color: #555; font-weight: 400; }}
.legend span {{ margin-right: 14px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<table class="summary">{rows}</table>
<p class="legend"><span style="color:#1f77b4">&#9644; value</span><span style="color:#555">&#9476; forecast</span>
<span style="color:#aec7e8">&#9608; forecast band</span><span style="color:#f5c542">&#9608; label window</span>
<span style="color:#d62728">&#9679; flagged</span><span style="color:#999">&#9608; probation (not scored)</span></p>
{figures}
</body></html>
"""


def _figure(index: int, p: SeriesPlot) -> str:
    n = len(p.values)
    notes = " ".join(p.notes)
    caption = f"{html.escape(p.title)} <span class=\"notes\">{html.escape(notes)}</span>"
    if n == 0:
        return f'<figure id="s{index}"><figcaption>{caption}</figcaption><p>no rows</p></figure>'
    height = _H + _STRIP * len(p.flags) + 20
    t = p.event_ms.astype(np.float64)
    t0, t1 = float(t[0]), float(max(t[-1], t[0] + 1))
    values = np.asarray(p.values, dtype=np.float64)
    band = None
    if p.expected is not None and p.scale is not None:
        band = (p.expected - p.scale, p.expected + p.scale)
    # the value axis fits the values; a forecast far off (a fresh key's first steps) is clipped, not scaled in
    finite = values[np.isfinite(values)]
    y0, y1 = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if y1 <= y0:
        y0, y1 = y0 - 1, y1 + 1
    y0, y1 = y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0)

    def sx(ms: np.ndarray) -> np.ndarray:
        return _PAD_L + (np.asarray(ms, dtype=np.float64) - t0) / (t1 - t0) * (_W - _PAD_L - _PAD_R)

    def sy(v: np.ndarray) -> np.ndarray:
        return _PAD_T + (y1 - np.asarray(v, dtype=np.float64)) / (y1 - y0) * (_H - _PAD_T - 20)

    box = f'x="{_PAD_L}" y="{_PAD_T}" width="{_W - _PAD_L - _PAD_R}" height="{_H - _PAD_T - 20}"'
    parts = [f'<clipPath id="c{index}"><rect {box}/></clipPath><rect class="frame" {box} fill="none" stroke="#ccc"/>',
             f'<g clip-path="url(#c{index})">']
    if p.probation_end_ms is not None:
        xe = float(sx(np.array([p.probation_end_ms], dtype=np.float64))[0])
        parts.append(f'<rect class="probation" x="{_PAD_L}" y="{_PAD_T}" width="{max(xe - _PAD_L, 0):.1f}" '
                     f'height="{_H - _PAD_T - 20}" fill="#000" fill-opacity="0.06"/>')
    for a, b in p.windows_ms:
        xa, xb = sx(np.array([a, b], dtype=np.float64)).tolist()
        parts.append(f'<rect class="window" x="{xa:.1f}" y="{_PAD_T}" width="{max(xb - xa, 2):.1f}" '
                     f'height="{_H - _PAD_T - 20}" fill="#f5c542" fill-opacity="0.35"/>')
    if band is not None:
        idx = _buckets(n)
        lo, hi = np.asarray(band[0], dtype=np.float64)[idx], np.asarray(band[1], dtype=np.float64)[idx]
        ok = np.isfinite(lo) & np.isfinite(hi)
        xs = sx(t[idx][ok]).tolist()
        pts = [*zip(xs, sy(hi[ok]).tolist(), strict=True), *reversed(list(zip(xs, sy(lo[ok]).tolist(), strict=True)))]
        parts.append(f'<polygon class="band" fill="#aec7e8" fill-opacity="0.6" points="{_points(pts)}"/>')
    if p.expected is not None:
        parts.append(_polyline("forecast", t, np.asarray(p.expected, dtype=np.float64), sx, sy,
                               'stroke="#555" stroke-dasharray="3,2"'))
    parts.append(_polyline("values", t, values, sx, sy, 'stroke="#1f77b4"'))
    parts.append("</g>")
    for k, (label, flags) in enumerate(p.flags):
        colour = _COLOURS[k % len(_COLOURS)]
        hit = np.flatnonzero(np.asarray(flags, dtype=bool))
        if k == 0:
            parts.extend(f'<circle class="flag" cx="{float(sx(t[i])):.1f}" cy="{float(sy(values[i])):.1f}" r="3" '
                         f'fill="{colour}"/>' for i in hit.tolist() if np.isfinite(values[i]))
        y = _H + k * _STRIP
        parts.append(f'<text x="{_PAD_L - 4}" y="{y + 9}" text-anchor="end" font-size="10">'
                     f'{html.escape(label)}</text>')
        parts.extend(f'<rect class="tick" x="{float(sx(t[i])):.1f}" y="{y}" width="1.5" height="{_STRIP - 2}" '
                     f'fill="{colour}"/>' for i in hit.tolist())
    parts.append(f'<text x="{_PAD_L - 4}" y="{_PAD_T + 8}" text-anchor="end" font-size="10">{_num(y1)}</text>'
                 f'<text x="{_PAD_L - 4}" y="{_H - 20}" text-anchor="end" font-size="10">{_num(y0)}</text>'
                 f'<text x="{_PAD_L}" y="{_PAD_T - 6}" font-size="10">{_date(t0)}</text>'
                 f'<text x="{_W - _PAD_R}" y="{_PAD_T - 6}" text-anchor="end" font-size="10">{_date(t1)}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
           f'viewBox="0 0 {_W} {height}">{"".join(parts)}</svg>')
    return f'<figure id="s{index}"><figcaption>{caption}</figcaption>{svg}</figure>'


def _buckets(n: int) -> np.ndarray:
    """Row indices to draw: all of them, or each bucket's first, min and max (peaks survive)."""
    if n <= 2 * _BUCKETS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, 2 * _BUCKETS).astype(np.int64))


_Scale = Callable[[np.ndarray], np.ndarray]


def _polyline(cls: str, t: np.ndarray, v: np.ndarray, sx: _Scale, sy: _Scale, style: str) -> str:
    n = len(v)
    if n > 2 * _BUCKETS:
        edges = np.linspace(0, n, _BUCKETS + 1).astype(np.int64)
        keep = []
        for a, b in itertools.pairwise(edges.tolist()):
            seg = v[a:b]
            good = np.flatnonzero(np.isfinite(seg))
            if good.size:
                lo, hi = a + good[np.argmin(seg[good])], a + good[np.argmax(seg[good])]
                keep.extend(sorted({int(lo), int(hi)}))
        idx = np.array(keep, dtype=np.int64)
    else:
        idx = np.flatnonzero(np.isfinite(v))
    if idx.size == 0:
        return ""
    pts = zip(sx(t[idx]).tolist(), sy(v[idx]).tolist(), strict=True)
    return f'<polyline class="{cls}" fill="none" stroke-width="1" {style} points="{_points(pts)}"/>'


def _points(pts: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)


def _num(v: float) -> str:
    return html.escape(f"{v:.4g}")


def _date(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
