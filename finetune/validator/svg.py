"""Tiny inline-SVG charts for the HTML leaderboard: a line chart and a horizontal box plot.

No plotting library: the output is a string of SVG markup meant to be embedded in an HTML page. Every
piece of text passes through :func:`html.escape`, since labels carry miner-controlled names."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
DASHES = ("", "7 3", "2 3", "9 3 2 3")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
MARKER_LIMIT = 60
"""Points per series up to which every point gets a marker (isolated points always do)."""
OUTLIER_LIMIT = 60
"""Outlier dots drawn per box at most (the most extreme ones first)."""


@dataclass(frozen=True)
class Series:
    """One line: ``key`` identifies it in the markup (``data-series``), ``label`` is shown in the legend;
    a point whose y is not finite breaks the line."""

    key: str
    label: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Box:
    """One row of a box plot; ``values`` may hold inf/NaN, which are ignored."""

    label: str
    values: tuple[float, ...]


def style(index: int) -> tuple[str, str]:
    """Colour and dash pattern of the ``index``-th series: 10 colours, then dashed variants."""
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = factor * magnitude
        if (high - low) / step <= count:
            break
    ticks = []
    value = math.ceil(low / step - 1e-9) * step
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def fmt_tick(value: float) -> str:
    return f"{value:.4g}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _span(values: Sequence[float], pad_fraction: float, min_pad: float) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = max((high - low) * pad_fraction, min_pad if high == low else 0.0)
    return low - pad, high + pad


def _open(width: float, height: float, title: str, label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}" '
        f'style="{FONT};font-size:12px">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#fff"/>',
    ]


def _empty(width: float, height: float, title: str, message: str) -> str:
    parts = _open(width, height, title, title)
    parts.append(
        f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#666">'
        f"{escape(message)}</text></svg>"
    )
    return "".join(parts)


def _power_of_ten(exponent: float) -> str:
    return fmt_tick(10**exponent)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    width: int = 1100,
    height: int = 340,
    legend_width: int = 260,
    y_log: bool = False,
) -> str:
    """One ``<path class="series">`` per series (even one without finite points), legend on the right.
    ``y_log``: a logarithmic y axis from ``y_range[0]`` (> 0; smaller values sit on the bottom line) to
    ``y_range[1]``, so values 1000x apart stay readable side by side."""
    label_of: Callable[[float], str] = fmt_tick
    if y_log:
        if y_range is None or y_range[0] <= 0:
            raise ValueError("a logarithmic axis needs y_range with a positive low end")
        floor = y_range[0]

        def log(y: float) -> float:
            return math.log10(max(y, floor)) if math.isfinite(y) else math.nan

        series = [Series(s.key, s.label, tuple((x, log(y)) for x, y in s.points)) for s in series]
        y_range = (math.log10(y_range[0]), math.log10(y_range[1]))

        label_of = _power_of_ten

    finite = [(x, y) for s in series for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        return _empty(width, height, title, "no data yet")
    height = max(height, 40 + 18 * len(series))
    left, right, top, bottom = 64.0, float(width - legend_width - 16), 16.0, float(height - 44)
    x_low, x_high = _span([x for x, _ in finite], 0.02, 1.0)
    y_low, y_high = y_range if y_range is not None else _span([y for _, y in finite], 0.08, 0.5)

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    def py(y: float) -> float:
        y = min(max(y, y_low), y_high)
        return bottom - (y - y_low) / (y_high - y_low) * (bottom - top)

    parts = _open(width, height, title, title)
    y_ticks = (
        [float(k) for k in range(math.ceil(y_low), math.floor(y_high) + 1)]
        if y_log
        else nice_ticks(y_low, y_high)
    )
    for tick in y_ticks:
        parts.append(
            f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 6:.1f}" y="{py(tick) + 4:.1f}" text-anchor="end" '
            f'fill="#444">{label_of(tick)}</text>'
        )
    x_ticks = [t for t in nice_ticks(x_low, x_high, 8) if float(t).is_integer()]
    for tick in x_ticks:
        parts.append(
            f'<line x1="{px(tick):.1f}" x2="{px(tick):.1f}" y1="{bottom:.1f}" y2="{bottom + 4:.1f}" '
            f'stroke="#444"/><text x="{px(tick):.1f}" y="{bottom + 17:.1f}" text-anchor="middle" '
            f'fill="#444">{tick:.0f}</text>'
        )
    parts.append(
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}" '
        f'fill="none" stroke="#999"/>'
        f'<text x="{(left + right) / 2:.1f}" y="{height - 8:.1f}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    for index, line in enumerate(series):
        colour, dash = style(index)
        segments: list[list[tuple[float, float]]] = [[]]
        for x, y in sorted(line.points):
            if math.isfinite(x) and math.isfinite(y):
                segments[-1].append((px(x), py(y)))
            elif segments[-1]:
                segments.append([])
        path = " ".join(
            "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in segment) for segment in segments if segment
        )
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<g><title>{escape(line.label)}</title><path class="series" data-series="{escape(line.key)}" '
            f'd="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        n_points = sum(len(segment) for segment in segments)
        for segment in segments:
            if len(segment) == 1 or n_points <= MARKER_LIMIT:
                parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in segment)
        parts.append("</g>")
        legend_x, legend_y = right + 16, top + 8 + 18 * index
        parts.append(
            f'<line x1="{legend_x:.1f}" x2="{legend_x + 22:.1f}" y1="{legend_y:.1f}" y2="{legend_y:.1f}" '
            f'stroke="{colour}" stroke-width="3"{dash_attr}/><text class="legend" x="{legend_x + 28:.1f}" '
            f'y="{legend_y + 4:.1f}">{escape(truncate(line.label, 34))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted, non-empty ``ordered``."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def box_plot(
    boxes: Sequence[Box],
    *,
    title: str,
    x_label: str,
    width: int = 1100,
    row_height: int = 28,
    label_width: int = 300,
) -> str:
    """Horizontal box plots sharing one x axis: quartile box, median, whiskers at 1.5 IQR, outlier dots
    (clamped to the axis), and a mean marker; a row without finite values says so."""
    clean = [sorted(v for v in box.values if math.isfinite(v)) for box in boxes]
    if not any(clean):
        return _empty(width, 120, title, "no finite losses" if boxes else "no models yet")
    stats: list[tuple[float, float, float, float, float] | None] = []
    for values in clean:
        if not values:
            stats.append(None)
            continue
        q1, median, q3 = quantile(values, 0.25), quantile(values, 0.5), quantile(values, 0.75)
        reach = 1.5 * (q3 - q1)
        low = min(v for v in values if v >= q1 - reach)
        high = max(v for v in values if v <= q3 + reach)
        stats.append((low, q1, median, q3, high))
    extents = [value for row in stats if row is not None for value in (row[0], row[4])]
    reach_low, reach_high = _span(extents, 1.0, 0.5)  # outliers this close widen the axis; others clamp
    extents += [v for values in clean for v in (values[:1] + values[-1:]) if reach_low <= v <= reach_high]
    x_low, x_high = _span(extents, 0.05, 0.5)
    left, right, top = float(label_width), float(width - 90), 12.0
    bottom = top + row_height * len(boxes)
    height = bottom + 44

    def px(x: float) -> float:
        x = min(max(x, x_low), x_high)
        return left + (x - x_low) / (x_high - x_low) * (right - left)

    parts = _open(width, height, title, title)
    for tick in nice_ticks(x_low, x_high, 8):
        parts.append(
            f'<line x1="{px(tick):.1f}" x2="{px(tick):.1f}" y1="{top:.1f}" y2="{bottom:.1f}" '
            f'stroke="#e5e5e5"/><text x="{px(tick):.1f}" y="{bottom + 16:.1f}" text-anchor="middle" '
            f'fill="#444">{fmt_tick(tick)}</text>'
        )
    parts.append(
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}" '
        f'fill="none" stroke="#999"/><text x="{(left + right) / 2:.1f}" y="{height - 8:.1f}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    for index, (box, values, row) in enumerate(zip(boxes, clean, stats, strict=True)):
        mid = top + row_height * (index + 0.5)
        colour, _ = style(index)
        parts.append(
            f'<g class="box"><text x="{left - 8:.1f}" y="{mid + 4:.1f}" text-anchor="end">'
            f"<title>{escape(box.label)}</title>{escape(truncate(box.label, 44))}</text>"
        )
        if row is None:
            parts.append(
                f'<text x="{left + 8:.1f}" y="{mid + 4:.1f}" fill="#999">no finite losses</text></g>'
            )
            continue
        low, q1, median, q3, high = row
        mean = math.fsum(values) / len(values)
        half = row_height * 0.32
        summary = (
            f"{box.label}: n={len(values)} min={fmt_tick(values[0])} q1={fmt_tick(q1)} "
            f"median={fmt_tick(median)} q3={fmt_tick(q3)} max={fmt_tick(values[-1])} mean={fmt_tick(mean)}"
        )
        outliers = [v for v in values if v < low or v > high]
        outliers.sort(key=lambda v: -abs(v - median))
        parts.append(
            f"<title>{escape(summary)}</title>"
            f'<line x1="{px(low):.1f}" x2="{px(high):.1f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="#555"/>'
            f'<line x1="{px(low):.1f}" x2="{px(low):.1f}" y1="{mid - half / 2:.1f}" '
            f'y2="{mid + half / 2:.1f}" stroke="#555"/>'
            f'<line x1="{px(high):.1f}" x2="{px(high):.1f}" y1="{mid - half / 2:.1f}" '
            f'y2="{mid + half / 2:.1f}" stroke="#555"/>'
            f'<rect x="{px(q1):.1f}" y="{mid - half:.1f}" width="{max(px(q3) - px(q1), 1.0):.1f}" '
            f'height="{2 * half:.1f}" fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>'
            f'<line x1="{px(median):.1f}" x2="{px(median):.1f}" y1="{mid - half:.1f}" '
            f'y2="{mid + half:.1f}" stroke="#111" stroke-width="2"/>'
            f'<path d="M{px(mean):.1f},{mid - 4:.1f} l4,4 l-4,4 l-4,-4 z" fill="#111"/>'
        )
        parts.extend(
            f'<circle cx="{px(v):.1f}" cy="{mid:.1f}" r="2" fill="none" stroke="{colour}"/>'
            for v in outliers[:OUTLIER_LIMIT]
        )
        parts.append(f'<text x="{right + 8:.1f}" y="{mid + 4:.1f}" fill="#444">n={len(values)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
