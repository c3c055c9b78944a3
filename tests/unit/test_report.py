"""The HTML report's structure: one figure per series, windows, band, flags and ticks where the data says,
nothing loaded from the network, peaks of long series kept when drawing fewer points."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

import numpy as np

from rnnwatch.consumer.html_report import SeriesPlot, render_report

T0 = 1_600_000_000_000


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        self.tags[f"{tag}.{d.get('class', '')}"] += 1
        self.attrs.append((tag, d))

    handle_startendtag = handle_starttag


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    return p


def _plot(n: int = 300, *, scale: bool = False) -> SeriesPlot:
    rng = np.random.default_rng(0)
    values = 10 + np.cumsum(rng.normal(0, 0.1, n))
    flags = np.zeros(n, dtype=bool)
    flags[[100, 200]] = True
    other = np.zeros(n, dtype=bool)
    other[[50, 100, 250]] = True
    return SeriesPlot("cat/series.csv", T0 + 60_000 * np.arange(n), values, expected=values + 0.05,
                      scale=np.full(n, 0.3) if scale else None, flags=[("a", flags), ("b", other)],
                      windows_ms=[(T0 + 60_000 * 90, T0 + 60_000 * 110)], notes=["300 rows"],
                      probation_end_ms=T0 + 60_000 * 44 if scale else None)


def test_one_figure_per_series_with_windows_band_flags_and_ticks() -> None:
    text = render_report("title <&>", [_plot(scale=True), _plot()], summary=[("series", "2")])
    tags = _parse(text).tags
    assert tags["svg."] == 2 and tags["figure."] == 2
    assert tags["rect.window"] == 2
    assert tags["rect.probation"] == 1
    assert tags["polygon.band"] == 1  # only the plot whose scores carry a scale
    assert tags["polyline.values"] == 2 and tags["polyline.forecast"] == 2
    assert tags["circle.flag"] == 2 * 2  # the first set of flags, on the line
    assert tags["rect.tick"] == 2 * (2 + 3)  # every set, as ticks
    assert "title &lt;&amp;&gt;" in text


def test_nothing_is_loaded_from_elsewhere() -> None:
    parsed = _parse(render_report("t", [_plot(scale=True)]))
    for tag, attrs in parsed.attrs:
        assert tag not in ("script", "link", "img", "iframe")
        for name, value in attrs.items():
            if name in ("src", "href"):
                raise AssertionError(f"{tag} loads {value}")
            if name != "xmlns":
                assert "http" not in (value or ""), (tag, name, value)


def test_a_long_series_keeps_its_peaks_with_fewer_points() -> None:
    n = 50_000
    values = np.sin(np.arange(n) / 500.0)
    values[31_337] = 40.0
    plot = SeriesPlot("long", T0 + 1000 * np.arange(n), values)
    parsed = _parse(render_report("t", [plot]))
    [points] = [a["points"] for tag, a in parsed.attrs if tag == "polyline"]
    assert points is not None
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert len(ys) <= 3_000
    assert min(ys) < 40  # the spike sets the top of the axis: dropped, every point would sit near y = 220


def test_an_empty_series_says_so() -> None:
    plot = SeriesPlot("empty", np.array([], dtype=np.int64), np.array([]))
    assert "no rows" in render_report("t", [plot])
