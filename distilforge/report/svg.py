"""Small dependency-free SVG charts for report.html: a scatter, horizontal bars and lines.

Each chart is one self-contained <svg> string. Data points carry a `data-target` attribute (and
`data-x`/`data-y` or `data-value`) so tests and people can read the figures back out of the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 760, 420
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 40, 55
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
FORMAT_COLORS = {"onnx": "#1f77b4", "openvino": "#9467bd", "tflite": "#ff7f0e", "torchscript": "#2ca02c",
                 "eager": "#444444", "optimum": "#b8860b"}
PEER_DASHES = ("1 4", "6 2 1 2")  # peer rows (Optimum's) in the line plot, one per peer model
FAILED_COLOR = "#d62728"
LOG_SPREAD = 20  # a scatter whose x values span more than this factor gets a log x axis


@dataclass
class Point:
    label: str
    x: float
    y: float
    color: str
    pareto: bool = False
    failed: bool = False
    reference: bool = False
    peer: bool = False  # not ours: drawn as a hollow diamond, never on the front


@dataclass
class Bar:
    label: str
    value: float
    color: str
    text: str = ""  # printed at the end of the bar, e.g. "91.7 FAIL"


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str
    dash: str = ""


def format_color(target: str) -> str:
    return FORMAT_COLORS.get(target.split(":")[0], "#7f7f7f")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k ticks from the last one at or below lo to the first one at or above hi (lo > 0)."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    every = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in (1, 2, 5)]
    start = max(t for t in every if t <= lo)
    end = min(t for t in every if t >= hi)
    return [t for t in every if start <= t <= end]


def padded_range(values: list[float], *, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo = min(lo, 0.0)
    span = hi - lo or (abs(hi) * 0.02 or 1.0)
    return (lo if zero else lo - span * 0.08), hi + span * 0.08


class Frame:
    """Maps data to pixels inside the plot area and draws the axes, grid and titles."""

    def __init__(self, xr: tuple[float, float], yr: tuple[float, float], *, width: int = WIDTH,
                 height: int = HEIGHT, log_x: bool = False) -> None:
        self.log_x = log_x
        self.xt, self.yt = (log_ticks(*xr) if log_x else nice_ticks(*xr)), nice_ticks(*yr)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.width, self.height = width, height
        self.left, self.right = MARGIN_LEFT, width - MARGIN_RIGHT
        self.top, self.bottom = MARGIN_TOP, height - MARGIN_BOTTOM

    def px(self, x: float) -> float:
        if self.log_x:
            lo, hi = math.log10(self.x0), math.log10(self.x1)
            return self.left + (math.log10(x) - lo) / ((hi - lo) or 1) * (self.right - self.left)
        return self.left + (x - self.x0) / ((self.x1 - self.x0) or 1) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / ((self.y1 - self.y0) or 1) * (self.bottom - self.top)

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        out = [f'<text x="{self.width / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>']
        for t in self.xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.top}" x2="{x:.1f}" y2="{self.bottom}" class="grid"/>')
            out.append(f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle">{_num(t)}</text>')
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>')
        out.append(f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
                   f'height="{self.bottom - self.top}" class="frame"/>')
        out.append(f'<text x="{(self.left + self.right) / 2:.0f}" y="{self.height - 14}" '
                   f'text-anchor="middle">{escape(x_label)}</text>')
        out.append(f'<text transform="translate(16 {(self.top + self.bottom) / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(y_label)}</text>')
        return out


def scatter(points: list[Point], *, title: str, x_label: str, y_label: str) -> str:
    """Points with their labels; the Pareto points joined by a dashed step line and ringed."""
    if not points:
        return empty(title, "no data")
    xs = [p.x for p in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) > LOG_SPREAD
    xr = (min(xs), max(xs)) if log_x else padded_range(xs, zero=True)
    frame = Frame(xr, padded_range([p.y for p in points]), width=940, height=480, log_x=log_x)
    if log_x:
        x_label += " (log scale)"
    out = frame.axes(title, x_label, y_label)
    front = sorted((p for p in points if p.pareto), key=lambda p: (p.x, -p.y))
    if len(front) > 1:
        path = [f"{frame.px(front[0].x):.1f},{frame.py(front[0].y):.1f}"]
        for a, b in zip(front, front[1:], strict=False):
            path.append(f"{frame.px(b.x):.1f},{frame.py(a.y):.1f}")
            path.append(f"{frame.px(b.x):.1f},{frame.py(b.y):.1f}")
        out.append(f'<polyline points="{" ".join(path)}" class="front"/>')
    placed: list[tuple[float, float, float, float]] = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        x, y = frame.px(p.x), frame.py(p.y)
        out.append(_marker(p, x, y))
        out.append(_point_label(p.label, x, y, placed, frame))
    legend = [("Pareto front", "#000000", "ring")] if front else []
    legend += [("failed validation", FAILED_COLOR, "cross")] if any(p.failed for p in points) else []
    legend += [("eager reference", FORMAT_COLORS["eager"], "square")] if any(p.reference for p in points) else []
    legend += [("peer (Optimum)", FORMAT_COLORS["optimum"], "diamond")] if any(p.peer for p in points) else []
    out.append(_legend(legend, frame.right + 12, frame.top))
    return _svg(out, frame.width, frame.height, title)


def _marker(p: Point, x: float, y: float) -> str:
    data = f'data-target="{escape(p.label)}" data-x="{p.x}" data-y="{p.y}" data-pareto="{str(p.pareto).lower()}"'
    tip = f"<title>{escape(p.label)}: {_num(p.x)}, {_num(p.y)}</title>"
    if p.failed:
        return (f'<g class="point failed" {data}>{tip}<path d="M{x - 5:.1f},{y - 5:.1f}L{x + 5:.1f},{y + 5:.1f}'
                f'M{x - 5:.1f},{y + 5:.1f}L{x + 5:.1f},{y - 5:.1f}" stroke="{FAILED_COLOR}" stroke-width="2.5"/></g>')
    if p.peer:
        return f'<g class="point peer" {data}>{tip}{_diamond(x, y, 7, p.color)}</g>'
    if p.reference:
        return (f'<g class="point reference" {data}>{tip}<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" '
                f'height="10" fill="{p.color}"/></g>')
    ring = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="#000" stroke-width="1.5"/>' if p.pareto \
        else ""
    return (f'<g class="point" {data}>{tip}{ring}<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="{p.color}" '
            f'fill-opacity="0.85"/></g>')


def _diamond(x: float, y: float, r: float, color: str) -> str:
    return (f'<path d="M{x:.1f},{y - r:.1f}L{x + r:.1f},{y:.1f}L{x:.1f},{y + r:.1f}L{x - r:.1f},{y:.1f}Z" '
            f'fill="#fff" stroke="{color}" stroke-width="2.5"/>')


def _point_label(text: str, x: float, y: float, placed: list[tuple[float, float, float, float]],
                 frame: Frame) -> str:
    """A label right of its point, moved down (then up) until it overlaps no earlier label."""
    w, h = len(text) * 6.8, 12.0
    lx = x + 10 if x + 10 + w <= frame.width - 4 else x - 10 - w
    for dy in _offsets():
        box = (lx, y + dy - h + 3, lx + w, y + dy + 3)
        if not any(_overlap(box, b) for b in placed) and frame.top - 10 <= box[1] and box[3] <= frame.bottom + 12:
            break
    placed.append(box)
    leader = "" if dy == 0 else (f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{lx:.1f}" y2="{y + dy - 4:.1f}" '
                                 'class="leader"/>')
    return f'{leader}<text x="{lx:.1f}" y="{y + dy:.1f}" class="plabel">{escape(text)}</text>'


def _offsets() -> list[float]:
    out = [0.0]
    for k in range(1, 20):
        out += [k * 12.0, -k * 12.0]
    return out


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def bars(items: list[Bar], *, title: str, x_label: str) -> str:
    """Horizontal bars, one per item, the value printed at the end of each."""
    if not items:
        return empty(title, "no data")
    row_h = 24
    height = MARGIN_TOP + MARGIN_BOTTOM + row_h * len(items)
    label_w = max(len(b.label) for b in items) * 7 + 16
    frame = Frame((0.0, max(b.value for b in items) * 1.12), (0.0, 1.0), height=height)
    frame.left, frame.right = label_w, WIDTH - 90
    out = [f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>']
    for t in frame.xt:
        x = frame.px(t)
        out.append(f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle">{_num(t)}</text>')
    for i, b in enumerate(items):
        y = frame.top + i * row_h + 4
        w = frame.px(b.value) - frame.left
        out.append(f'<text x="{frame.left - 8}" y="{y + 13}" text-anchor="end">{escape(b.label)}</text>')
        out.append(f'<rect class="bar" data-target="{escape(b.label)}" data-value="{b.value}" x="{frame.left}" '
                   f'y="{y}" width="{max(w, 1):.1f}" height="{row_h - 8}" fill="{b.color}">'
                   f'<title>{escape(b.label)}: {_num(b.value)}</title></rect>')
        out.append(f'<text x="{frame.left + w + 5:.1f}" y="{y + 13}">{escape(b.text or _num(b.value))}</text>')
    out.append(f'<text x="{(frame.left + frame.right) / 2:.0f}" y="{height - 14}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    return _svg(out, WIDTH, height, title)


def lines(series: list[Series], *, title: str, x_label: str, y_label: str) -> str:
    """One polyline per series (missing values are left out), with a legend on the right."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if not xs:
        return empty(title, "no data")
    frame = Frame(padded_range(xs, zero=True), padded_range(ys, zero=True))
    out = frame.axes(title, x_label, y_label)
    for s in series:
        pts = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in s.points)
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<g class="series" data-target="{escape(s.label)}">'
                   f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        for x, y in s.points:
            out.append(f'<circle class="point" data-target="{escape(s.label)}" data-x="{x}" data-y="{y}" '
                       f'cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{s.color}">'
                       f'<title>{escape(s.label)}: {_num(x)} tokens, {_num(y)} ms</title></circle>')
        out.append("</g>")
    out.append(_legend([(s.label, s.color, "line" + (":" + s.dash if s.dash else "")) for s in series],
                       frame.right + 12, frame.top))
    return _svg(out, frame.width, frame.height, title)


def _legend(entries: list[tuple[str, str, str]], x: float, y: float) -> str:
    out = []
    for i, (label, color, kind) in enumerate(entries):
        cy = y + 8 + i * 16
        if kind == "ring":
            sym = f'<circle cx="{x + 8}" cy="{cy}" r="6" fill="none" stroke="{color}" stroke-width="1.5"/>'
        elif kind == "cross":
            sym = (f'<path d="M{x + 4},{cy - 4}L{x + 12},{cy + 4}M{x + 4},{cy + 4}L{x + 12},{cy - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        elif kind == "square":
            sym = f'<rect x="{x + 4}" y="{cy - 4}" width="8" height="8" fill="{color}"/>'
        elif kind == "diamond":
            sym = _diamond(x + 8, cy, 5, color)
        else:
            dash = kind.partition(":")[2]
            style = f' stroke-dasharray="{dash}"' if dash else ""
            sym = f'<line x1="{x}" y1="{cy}" x2="{x + 16}" y2="{cy}" stroke="{color}" stroke-width="2"{style}/>'
        out.append(f'{sym}<text x="{x + 22}" y="{cy + 4}" class="legend">{escape(label)}</text>')
    return "".join(out)


def empty(title: str, message: str) -> str:
    out = [f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>',
           f'<text x="{WIDTH / 2:.0f}" y="80" text-anchor="middle" class="empty">{escape(message)}</text>']
    return _svg(out, WIDTH, 120, title)


def _svg(body: list[str], width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">' + "".join(body) + "</svg>")


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"
