"""Hand-written SVG chart of a compare run (no plotting library).

One row per scenario: on the left a horizontal bar per target (its own axis,
since the units differ: logins/s, MB/s, kB per session), on the right the
latency CDFs of that scenario (log-x axis in microseconds, one line per
target). One legend for the whole figure.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

COLORS = {
    "direct": "#7f7f7f",
    "forestgate": "#2ca02c",
    "nginx": "#1f77b4",
    "dovecot-proxy": "#d62728",
}
FALLBACK = ["#9467bd", "#8c564b", "#e377c2", "#17becf"]

W = 1280
MARGIN = 24
LEFT_W = 520           # bar panel incl. labels
GAP = 70
RIGHT_X = MARGIN + LEFT_W + GAP
RIGHT_W = W - RIGHT_X - MARGIN - 10
ROW_H = 230
HEADER_H = 120
BANDS = (0.0, 0.5, 0.9, 0.99, 0.999)   # fraction axis: equal heights between these
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def color(target: str, targets: list[str]) -> str:
    if target in COLORS:
        return COLORS[target]
    return FALLBACK[targets.index(target) % len(FALLBACK)]


def fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def band(f: float) -> float:
    """Position 0..1 of fraction f on the banded fraction axis."""
    n = len(BANDS) - 1
    if f >= BANDS[-1]:
        return 1.0
    for i in range(n):
        if f <= BANDS[i + 1]:
            return (i + (f - BANDS[i]) / (BANDS[i + 1] - BANDS[i])) / n
    return 1.0


def tick_label(v: float, step: float) -> str:
    g = f"{step:.6g}"
    decimals = len(g.split(".")[1]) if "." in g and "e" not in g else 0
    return f"{v:,.{decimals}f}"


def fmt_us(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    if us >= 1e3:
        return f"{us / 1e3:g} ms"
    return f"{us:g} µs"


def nice_step(vmax: float, n: int = 5) -> float:
    if vmax <= 0:
        return 1.0
    raw = vmax / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


class _Svg:
    def __init__(self):
        self.parts: list[str] = []

    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222",
             cls=None, extra=""):
        c = f' class="{cls}"' if cls else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{fill}"{c}{extra}>{escape(str(s))}</text>')

    def line(self, x1, y1, x2, y2, stroke="#ccc", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{stroke}" stroke-width="{width}"{d}/>')

    def rect(self, x, y, w, h, fill, extra=""):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{h:.1f}" '
                 f'fill="{fill}"{extra}/>')


def _bars(svg: _Svg, row: dict, targets: list[str], x0: float, y0: float) -> None:
    """Horizontal bars, one per target, with their own axis."""
    label_w = 110
    value_w = 80
    bx = x0 + label_w
    bw = LEFT_W - label_w - value_w
    top = y0 + 34
    bottom = y0 + ROW_H - 40
    present = [t for t in targets if row["values"].get(t) is not None]
    vmax = max([row["values"][t] for t in present] + [0])
    # Room for each bar's label to its right (about 6.5 px per character).
    need = vmax * 1.05
    for t in present:
        v = row["values"][t]
        note = row.get("notes", {}).get(t, "")
        text_w = 6.5 * len(fmt(v) + ("  " + note if note else "")) + 8
        room = bw + value_w - text_w
        if v > 0 and room > bw * 0.3:
            need = max(need, v * bw / room)
    step = nice_step(need if vmax > 0 else 1)
    axis_max = step * max(1, math.ceil(need / step)) if vmax > 0 else step * 5
    better = "higher is better" if row.get("better", "higher") == "higher" else \
        "lower is better"
    svg.text(x0, y0 + 14, row["title"], size=15, weight="bold")
    svg.text(x0, y0 + 29, f'{row["metric"]} ({better})', size=12, fill="#555")
    # grid and axis labels
    t = 0.0
    while t <= axis_max + step / 1000:
        x = bx + bw * t / axis_max
        svg.line(x, top, x, bottom, stroke="#e3e3e3")
        svg.text(x, bottom + 14, tick_label(t, step), size=10, anchor="middle", fill="#666")
        t += step
    svg.line(bx, top, bx, bottom, stroke="#999")
    n = max(len(targets), 1)
    slot = (bottom - top) / n
    bar_h = min(26, slot * 0.7)
    for i, tname in enumerate(targets):
        cy = top + slot * (i + 0.5)
        svg.text(bx - 8, cy + 4, tname, size=12, anchor="end")
        v = row["values"].get(tname)
        note = row.get("notes", {}).get(tname, "")
        if v is None:
            svg.text(bx + 4, cy + 4, note or "not run", size=11, fill="#999")
            continue
        w = bw * v / axis_max if axis_max else 0
        svg.rect(bx, cy - bar_h / 2, w, bar_h, color(tname, targets),
                 extra=f' class="bar" data-target="{escape(tname)}"')
        svg.text(bx + w + 5, cy + 4, fmt(v) + (f"  {note}" if note else ""), size=11,
                 fill="#222")


def _cdfs(svg: _Svg, row: dict, targets: list[str], x0: float, y0: float) -> None:
    """Latency CDFs on a log-x axis."""
    cdfs = {t: [(float(p[0]), float(p[1])) for p in row.get("cdfs", {}).get(t) or []
                if float(p[0]) > 0]
            for t in targets}
    svg.text(x0, y0 + 14, row.get("cdf_title", "latency CDF"), size=15, weight="bold")
    svg.text(x0, y0 + 29, "fraction of operations done within a latency (x: log scale; "
             "y: 0 · 0.5 · 0.9 · 0.99 · 0.999 evenly spaced)", size=12, fill="#555")
    px0, px1 = x0 + 44, x0 + RIGHT_W
    top = y0 + 40
    bottom = y0 + ROW_H - 40
    allx = [x for pts in cdfs.values() for x, _ in pts]
    if not allx:
        svg.text((px0 + px1) / 2, (top + bottom) / 2, "no latency data", size=12,
                 anchor="middle", fill="#999")
        return
    lo = math.floor(math.log10(min(allx)))
    hi = math.ceil(math.log10(max(allx)))
    if hi <= lo:
        hi = lo + 1

    def X(us: float) -> float:
        return px0 + (px1 - px0) * (math.log10(us) - lo) / (hi - lo)

    # Fraction axis in four equal bands, 0-0.5, 0.5-0.9, 0.9-0.99 and
    # 0.99-0.999 (linear inside each), so the p99 and p99.9 tails show.
    def Y(f: float) -> float:
        return bottom - (bottom - top) * band(f)

    for k in range(lo, hi + 1):
        x = X(10 ** k)
        svg.line(x, top, x, bottom, stroke="#d9d9d9")
        svg.text(x, bottom + 14, fmt_us(10 ** k), size=10, anchor="middle", fill="#666")
        if k < hi:
            for m in (2, 5):
                svg.line(X(m * 10 ** k), top, X(m * 10 ** k), bottom, stroke="#f0f0f0")
    for f in (0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999):
        y = Y(f)
        dash = "4,3" if f in BANDS else None
        svg.line(px0, y, px1, y, stroke="#e0e0e0" if dash is None else "#c8c8c8", dash=dash)
        svg.text(px0 - 6, y + 4, f"{f:g}", size=10, anchor="end", fill="#666")
    svg.line(px0, bottom, px1, bottom, stroke="#999")
    svg.line(px0, top, px0, bottom, stroke="#999")
    for tname in targets:
        pts = cdfs.get(tname)
        if not pts:
            continue
        pts.sort()
        # Up to the first point at the top of the axis (the rest is the max).
        for i, (_, f) in enumerate(pts):
            if f >= BANDS[-1]:
                pts = pts[:i + 1]
                break
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        svg.add(f'<polyline class="cdf" data-target="{escape(tname)}" points="{path}" '
                f'fill="none" stroke="{color(tname, targets)}" stroke-width="2" '
                f'stroke-linejoin="round"/>')


def render(title: str, subtitle: str, targets: list[str], rows: list[dict],
           footnotes: list[str] | None = None) -> str:
    """rows: [{title, metric, better, values{target: v}, notes{target: s},
    cdf_title, cdfs{target: [[us, fraction], ...]}}]"""
    footnotes = footnotes or []
    h = HEADER_H + ROW_H * len(rows) + 20 + 16 * len(footnotes) + 10
    svg = _Svg()
    svg.add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
            f'viewBox="0 0 {W} {h}" font-family="{FONT}">')
    svg.add(f'<title>{escape(title)}</title>')
    svg.rect(0, 0, W, h, "#ffffff")
    svg.text(MARGIN, 32, title, size=20, weight="bold")
    svg.text(MARGIN, 54, subtitle, size=12, fill="#444")
    # legend
    lx = MARGIN
    ly = 84
    svg.add('<g class="legend">')
    for tname in targets:
        svg.rect(lx, ly - 11, 26, 12, color(tname, targets),
                 extra=f' class="legend-swatch" data-target="{escape(tname)}"')
        svg.text(lx + 32, ly, tname, size=13)
        lx += 32 + 9 * len(tname) + 30
    svg.add('</g>')
    svg.line(MARGIN, HEADER_H - 12, W - MARGIN, HEADER_H - 12, stroke="#bbb")
    for i, row in enumerate(rows):
        y0 = HEADER_H + ROW_H * i
        svg.add(f'<g class="row" data-scenario="{escape(row.get("key", row["title"]))}">')
        if i:
            svg.line(MARGIN, y0 - 6, W - MARGIN, y0 - 6, stroke="#eee")
        _bars(svg, row, targets, MARGIN, y0)
        _cdfs(svg, row, targets, RIGHT_X, y0)
        svg.add('</g>')
    fy = HEADER_H + ROW_H * len(rows) + 14
    for note in footnotes:
        svg.text(MARGIN, fy, note, size=11, fill="#555")
        fy += 16
    svg.add('</svg>')
    return "\n".join(svg.parts) + "\n"
