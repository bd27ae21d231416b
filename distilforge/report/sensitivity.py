"""The report's "which layers cost INT8 its accuracy": each INT8 target's sensitivity table (manifest
`ladder.sensitivity`, quantize/sensitivity.py), its most costly layer groups, and which ones the kept recipe
left float."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

SHOWN = 6  # layer groups shown per target, most costly first
TITLE = "Which layers cost INT8 its accuracy"


@dataclass(frozen=True)
class TargetSensitivity:
    target: str
    kept: str | None
    float_layers: tuple[str, ...]
    layers: tuple[tuple[str, float], ...]  # (group, cost), most costly first
    method: str
    by_role: str = ""  # the kept recipe keeps whole roles float (a fallback rung): its summary
    skipped: str = ""  # the first measured rung the eager prediction skipped (ladder.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "kept": self.kept, "float_layers": list(self.float_layers),
                "layers": [{"layer": g, "cost": c} for g, c in self.layers], "method": self.method}

    def cells(self) -> list[str]:
        costly = ", ".join(f"{g} {c:.1e}" + (" (float)" if g in self.float_layers else "")
                           for g, c in self.layers[:SHOWN])
        kept_float = ", ".join(self.float_layers) or (f"by role: {self.by_role}" if self.by_role else "none")
        kept = (self.kept or "") + (f" ({self.skipped} on: predicted no better)" if self.skipped else "")
        return [self.target, kept, kept_float, costly]


HEADERS = ("target", "kept recipe", "layer groups kept float",
           f"most costly layer groups (1 - mean cosine, top {SHOWN})")
LEGEND = ("Each layer group (an encoder layer's query/key/value projections, attention output, feed-forward input "
          "or output, or a head Linear) was quantized alone in the eager model the way the target's format "
          "quantizes it, and compared with the fp32 model on real text; the ladder's measured rungs keep the most "
          "costly groups float (docs/int8.md).")


def sensitivities(manifest: dict[str, Any]) -> list[TargetSensitivity]:
    out = []
    for artifact in manifest.get("artifacts", []):
        ladder = artifact.get("ladder") or {}
        table = ladder.get("sensitivity")
        if not table:
            continue
        tried = ladder.get("tried", [])
        kept = next((t for t in tried if t.get("name") == ladder.get("kept")), {})
        first = bool(tried) and kept is tried[0]
        out.append(TargetSensitivity(artifact["target"], ladder.get("kept"), tuple(kept.get("float_layers") or ()),
                                     tuple((c["layer"], c["cost"]) for c in table["layers"]), table["method"],
                                     "" if first or kept.get("float_layers") else kept.get("summary") or "",
                                     next((s["name"] for s in ladder.get("skipped") or []), "")))
    return out


def markdown_lines(manifest: dict[str, Any]) -> list[str]:
    rows = sensitivities(manifest)
    if not rows:
        return []
    lines = ["", f"## {TITLE}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return lines + ["", LEGEND]


def html_section(manifest: dict[str, Any]) -> str:
    rows = sensitivities(manifest)
    if not rows:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row.cells()) + "</tr>" for row in rows)
    return (f'<h2 id="sensitivity">{escape(TITLE)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}'
            f'</tbody></table><p class="small">{escape(LEGEND)}</p>')
