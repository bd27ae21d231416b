"""Small dependency-free SVG charts for report.html: a scatter with a numbered key, horizontal bars and lines.

Each chart is one self-contained <svg> string. Data points carry a `data-target` attribute (and
`data-x`/`data-y` or `data-value`) so tests and people can read the figures back out of the page.
No text is placed next to a point: a scatter marks each point with its number and lists the numbers in a key,
so labels cannot pile up however close the points are. The axes' ranges and ticks are scales.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from distilforge.report.scales import Scale, axis_scale, linear_scale
from distilforge.targets import FORMATS

WIDTH, HEIGHT = 760, 420
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 190, 40, 55
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
# rows that are no format's (a format's colour: targets.py); the peers': Optimum's, optimum-intel's
ROW_COLORS = {"eager": "#444444", "optimum": "#b8860b", "optimum-intel": "#5e3c99"}
PEER_DASHES = ("1 4", "6 2 1 2", "3 3")  # peer rows in the line plot, one per peer model (repeating)
FAILED_COLOR = "#d62728"
OTHER_COLOR = "#7f7f7f"  # a row neither of a format nor in ROW_COLORS
CHAR_W = 7.0  # px per character of 11px text (a generous guess), to size keys and legends
MARK_R = 11  # radius of a scatter's numbered marker (a peer's diamond reaches MARK_R + 2 with its stroke)
MARK_GAP = 2 * MARK_R + 4  # least distance between two markers' centres
KEY_ROW = 25  # px between the rows of a scatter's key
SCATTER_PLOT_W, SCATTER_MIN_H = 620, 500


@dataclass
class Point:
    label: str
    x: float
    y: float
    color: str
    mark: str = ""  # the number drawn in the marker and in the key
    note: str = ""  # the key's second column for this point, e.g. the task metric
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
    mark: str = ""  # shown before the label in the legend, as in the scatter's key


def format_color(target: str) -> str:
    name = target.split(":")[0]
    spec = FORMATS.get(name)
    return spec.color if spec else ROW_COLORS.get(name, OTHER_COLOR)


class Frame:
    """Maps data to pixels inside the plot area and draws the axes, grid and titles."""

    def __init__(self, xs: Scale, ys: Scale, *, width: int = WIDTH, height: int = HEIGHT,
                 right: int | None = None) -> None:
        self.xs, self.ys = xs, ys
        self.width, self.height = width, height
        self.left, self.right = MARGIN_LEFT, width - MARGIN_RIGHT if right is None else right
        self.top, self.bottom = MARGIN_TOP, height - MARGIN_BOTTOM

    def px(self, x: float) -> float:
        return self.left + self.xs.fraction(x) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - self.ys.fraction(y) * (self.bottom - self.top)

    def axes(self, title: str, x_label: str, y_label: str, *, y_floor: float | None = None) -> list[str]:
        """Title, grid, tick labels and axis titles; a tick at `y_floor` reads '≤ floor' (values below drawn there)."""
        out = [f'<text x="{self.width / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>']
        for t in self.xs.ticks:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{self.top}" x2="{x:.1f}" y2="{self.bottom}" class="grid"/>')
            out.append(f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle" class="tick">{_num(t)}</text>')
        for t in self.ys.ticks:
            y = self.py(t)
            text = ("≤ " if y_floor is not None and math.isclose(t, y_floor) else "") + _num(t)
            out.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{text}</text>')
        out.append(f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
                   f'height="{self.bottom - self.top}" class="frame"/>')
        out.append(f'<text x="{(self.left + self.right) / 2:.0f}" y="{self.height - 14}" '
                   f'text-anchor="middle">{escape(x_label + _log_note(self.xs))}</text>')
        out.append(f'<text transform="translate(16 {(self.top + self.bottom) / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(y_label + _log_note(self.ys))}</text>')
        return out


def _log_note(scale: Scale) -> str:
    return " (log scale)" if scale.log else ""


def scatter(points: list[Point], *, title: str, x_label: str, y_label: str, log_y: bool = False,
            y_floor: float | None = None, note_title: str = "", notes: list[str] = ()) -> str:
    """Numbered markers (never text beside a point) with a key on the right: mark, label and note per point.

    The Pareto points (lower x and lower y are better) are joined in x order by a dashed polyline through their
    true positions. A marker that would overlap another is moved to the nearest free spot and tied to its true
    position by a thin line. `y_floor`: values there stand for 'at most this' (the tick says so). `notes`: lines
    under the key (e.g. what the floor means)."""
    if not points:
        return empty(title, "no data")
    key_w = _key_width(points, note_title, notes)
    width = MARGIN_LEFT + SCATTER_PLOT_W + 24 + key_w + 8
    height = max(SCATTER_MIN_H, MARGIN_TOP + KEY_ROW * (len(points) + 5 + len(notes)) + 20)
    ys = [p.y for p in points]
    frame = Frame(axis_scale([p.x for p in points], count=8), axis_scale(ys, log=log_y), width=width, height=height,
                  right=MARGIN_LEFT + SCATTER_PLOT_W)
    floor = y_floor if y_floor is not None and any(y <= y_floor for y in ys) else None
    out = frame.axes(title, x_label, y_label, y_floor=floor)
    exact = [(frame.px(p.x), frame.py(p.y)) for p in points]
    front = sorted((i for i, p in enumerate(points) if p.pareto), key=lambda i: (points[i].x, points[i].y))
    if front:
        path = " ".join(f"{exact[i][0]:.1f},{exact[i][1]:.1f}" for i in front)
        marks = " ".join(points[i].mark for i in front)
        out.append(f'<polyline points="{path}" class="front" data-marks="{escape(marks)}"/>')
    centers = place_marks(points, exact, frame)
    moved = [i for i, c in enumerate(centers) if c != exact[i]]
    for i in moved:
        (x, y), (cx, cy) = exact[i], centers[i]
        out.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{cx:.1f}" y2="{cy:.1f}" class="leader"/>'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_mark_color(points[i])}"/>')
    for p, (x, y), (cx, cy) in zip(points, exact, centers, strict=True):
        out.append(_marker(p, x, y, cx, cy))
    out.append(_key(points, frame.right + 24, frame.top, key_w, note_title=note_title, moved=bool(moved),
                    notes=notes))
    return _svg(out, frame.width, frame.height, title)


def place_marks(points: list[Point], exact: list[tuple[float, float]], frame: Frame) -> list[tuple[float, float]]:
    """Each marker's centre: its true position when free, else the nearest spot around it that overlaps no marker
    placed before, covers no other point's true position and stays in the plot. Front points are placed first."""
    order = sorted(range(len(points)), key=lambda i: (not points[i].pareto, points[i].x, points[i].y))
    centers: dict[int, tuple[float, float]] = {}
    for i in order:
        x, y = exact[i]
        others = [exact[j] for j in range(len(points)) if j != i]
        spots = [(x + dx, y + dy) for dx, dy in _offsets()]
        centers[i] = next((s for k, s in enumerate(spots) if _free(s, centers.values(), others if k else [], frame)),
                          (x, y))
    return [centers[i] for i in range(len(points))]


def _offsets() -> list[tuple[float, float]]:
    """(0, 0), then rings of spots ever further out, 12 to a ring, starting to the right and going round."""
    out = [(0.0, 0.0)]
    for ring in range(1, 9):
        r = ring * (MARK_GAP + 1)
        out += [(r * math.cos(math.radians(a)), r * math.sin(math.radians(a))) for a in range(0, 360, 30)]
    return out


def _free(spot: tuple[float, float], placed, others: list[tuple[float, float]], frame: Frame) -> bool:
    x, y = spot
    inside = frame.left + MARK_R <= x <= frame.right - MARK_R and frame.top + MARK_R <= y <= frame.bottom - MARK_R
    return (inside and all(math.dist(spot, c) >= MARK_GAP for c in placed)
            and all(math.dist(spot, o) >= MARK_R + 3 for o in others))


def _mark_color(p: Point) -> str:
    return FAILED_COLOR if p.failed else p.color


def _marker(p: Point, x: float, y: float, cx: float, cy: float) -> str:
    """The numbered marker at (cx, cy); data-px/data-py hold the point's true position (x, y)."""
    kind = " failed" if p.failed else " peer" if p.peer else " reference" if p.reference else ""
    data = (f'data-target="{escape(p.label)}" data-mark="{escape(p.mark)}" data-x="{p.x}" data-y="{p.y}" '
            f'data-pareto="{str(p.pareto).lower()}" data-px="{x:.1f}" data-py="{y:.1f}"')
    tip = f"<title>{escape(p.mark)} {escape(p.label)}: {_num(p.x)}, {_num(p.y)}</title>"
    return f'<g class="point{kind}" {data}>{tip}{_mark_symbol(p, cx, cy, MARK_R)}</g>'


def _mark_symbol(p: Point, cx: float, cy: float, r: float) -> str:
    """The marker's shape and number: a filled circle (ringed in black on the front), a hollow red circle for a
    failed artifact, a hollow diamond for a peer, a square for the eager reference."""
    color = _mark_color(p)
    if p.reference:
        shape = f'<rect x="{cx - r + 1:.1f}" y="{cy - r + 1:.1f}" width="{2 * r - 2}" height="{2 * r - 2}" ' \
                f'fill="{color}"/>'
    elif p.peer:
        shape = _diamond(cx, cy, r + 1, color)
    elif p.failed:
        shape = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r - 2}" fill="#fff" stroke="{color}" stroke-width="2"/>'
    else:
        shape = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r - 2.5}" fill="{color}"/>'
        if p.pareto:  # a black ring just outside the disc, the number inside left clear
            shape += f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r - 1}" fill="none" stroke="#000" stroke-width="2"/>'
    fill = color if (p.failed or p.peer) else "#fff"
    size = round(r * (0.95 if len(p.mark) < 2 else 0.82), 1)
    return (shape + f'<text x="{cx:.1f}" y="{cy + size * 0.36:.1f}" text-anchor="middle" class="mark" '
            f'style="fill:{fill};font-size:{size}px">{escape(p.mark)}</text>')


def _diamond(x: float, y: float, r: float, color: str) -> str:
    return (f'<path d="M{x:.1f},{y - r:.1f}L{x + r:.1f},{y:.1f}L{x:.1f},{y + r:.1f}L{x - r:.1f},{y:.1f}Z" '
            f'fill="#fff" stroke="{color}" stroke-width="2"/>')


def _key_width(points: list[Point], note_title: str, notes: list[str]) -> float:
    label_w = max(len(p.label) for p in points) * CHAR_W
    note_w = max([len(p.note) for p in points] + [len(note_title)]) * CHAR_W
    legend_w = max([len(t) for t in _shape_legend_texts()] + [len(n) for n in notes]) * CHAR_W
    return max(2 * MARK_R + 8 + label_w + 14 + note_w, 2 * MARK_R + 8 + legend_w)


def _shape_legend_texts() -> list[str]:
    return ["on the Pareto front (dashed line)", "failed validation", "moved off its point (thin line)"]


def _key(points: list[Point], x: float, y: float, width: float, *, note_title: str, moved: bool,
         notes: list[str]) -> str:
    """The scatter's key: a header, one row per point in mark order (eager last), then what the shapes mean."""
    text_x, right = x + 2 * MARK_R + 8, x + width
    out = [f'<g class="key"><text x="{text_x:.1f}" y="{y + 4}" class="legend head">target</text>',
           f'<text x="{right:.1f}" y="{y + 4}" text-anchor="end" class="legend head">{escape(note_title)}</text>']
    rows = sorted(points, key=lambda p: (not p.mark.isdigit(), int(p.mark) if p.mark.isdigit() else 0, p.label))
    for i, p in enumerate(rows, start=1):
        cy = y + i * KEY_ROW
        out.append(f'<g class="key-entry" data-mark="{escape(p.mark)}">{_mark_symbol(p, x + MARK_R, cy, MARK_R - 1)}'
                   f'<text x="{text_x:.1f}" y="{cy + 4:.1f}" class="legend">{escape(p.label)}</text>'
                   f'<text x="{right:.1f}" y="{cy + 4:.1f}" text-anchor="end" class="legend">{escape(p.note)}</text>'
                   "</g>")
    cy = y + (len(rows) + 1.3) * KEY_ROW
    texts = _shape_legend_texts()
    shapes = [(texts[0], Point("", 0, 0, "#999", mark="", pareto=True), any(p.pareto for p in points)),
              (texts[1], Point("", 0, 0, "#999", mark="", failed=True), any(p.failed for p in points))]
    for text, sample, shown in shapes:
        if shown:
            out.append(f'<g class="key-entry">{_mark_symbol(sample, x + MARK_R, cy, MARK_R - 2)}'
                       f'<text x="{text_x:.1f}" y="{cy + 4:.1f}" class="legend">{escape(text)}</text></g>')
            cy += KEY_ROW
    if moved:
        out.append(f'<g class="key-entry"><line x1="{x}" y1="{cy}" x2="{x + 2 * MARK_R}" y2="{cy}" class="leader"/>'
                   f'<text x="{text_x:.1f}" y="{cy + 4:.1f}" class="legend">{escape(texts[2])}</text></g>')
        cy += KEY_ROW
    for note in notes:
        out.append(f'<text x="{x:.1f}" y="{cy + 4:.1f}" class="legend small">{escape(note)}</text>')
        cy += KEY_ROW * 0.8
    return "".join(out) + "</g>"


def bars(items: list[Bar], *, title: str, x_label: str) -> str:
    """Horizontal bars, one per item, the value printed at the end of each."""
    if not items:
        return empty(title, "no data")
    row_h = 24
    height = MARGIN_TOP + MARGIN_BOTTOM + row_h * len(items)
    label_w = max(len(b.label) for b in items) * CHAR_W + 16
    frame = Frame(linear_scale(0.0, max(b.value for b in items) * 1.12), linear_scale(0.0, 1.0), height=height)
    frame.left, frame.right = label_w, WIDTH - 90
    out = [f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>']
    for t in frame.xs.ticks:
        x = frame.px(t)
        out.append(f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{frame.bottom + 16}" text-anchor="middle" class="tick">{_num(t)}</text>')
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
    """One polyline per series (missing values are left out), with a legend on the right. Either axis is on a
    log scale when its values are wide (one slow series then does not flatten the others)."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if not xs:
        return empty(title, "no data")
    entries = [(f"{s.mark} {s.label}".strip(), s.color, "line" + (":" + s.dash if s.dash else "")) for s in series]
    legend_w = 22 + max(len(text) for text, _, _ in entries) * CHAR_W
    width = int(WIDTH - MARGIN_RIGHT + 12 + legend_w)
    height = max(HEIGHT, MARGIN_TOP + 16 * len(series) + 20)
    x_scale = axis_scale(xs, zero=True)
    if len(set(xs)) <= 8:  # a few measured x values (sequence lengths): ticks at exactly those
        x_scale.ticks = sorted(set(xs))
    frame = Frame(x_scale, axis_scale(ys, zero=True), width=width, height=height, right=WIDTH - MARGIN_RIGHT)
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
    out.append(_legend(entries, frame.right + 12, frame.top))
    return _svg(out, frame.width, frame.height, title)


def _legend(entries: list[tuple[str, str, str]], x: float, y: float) -> str:
    """Line-plot legend: one row per series, a line sample in its colour and dash, then its text."""
    out = []
    for i, (label, color, kind) in enumerate(entries):
        cy = y + 8 + i * 16
        dash = kind.partition(":")[2]
        style = f' stroke-dasharray="{dash}"' if dash else ""
        sample = f'<line x1="{x}" y1="{cy}" x2="{x + 16}" y2="{cy}" stroke="{color}" stroke-width="2"{style}/>'
        out.append(f'<g class="legend-entry">{sample}<text x="{x + 22}" y="{cy + 4}" class="legend">'
                   f"{escape(label)}</text></g>")
    return "".join(out)


def empty(title: str, message: str) -> str:
    out = [f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" class="title">{escape(title)}</text>',
           f'<text x="{WIDTH / 2:.0f}" y="80" text-anchor="middle" class="empty">{escape(message)}</text>']
    return _svg(out, WIDTH, 120, title)


def _svg(body: list[str], width: float, height: float, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title)}">' + "".join(body)
            + "</svg>")


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) < 1e-3:
        mantissa, _, exponent = f"{v:.0e}".partition("e")
        return f"{mantissa}e{int(exponent)}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"
