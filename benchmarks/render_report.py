"""Screenshot DIR/report.html in headless Chromium, to look at the report as a person would.

    .venv/bin/python benchmarks/render_report.py DIR OUT.png [--width 1280] [--height 3200]

Needs a Chromium binary (Debian: `apt-get install chromium`, /usr/bin/chromium); `--chromium PATH` picks
another. The page is loaded from file:// with the network flags off: report.html has no external assets.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome", "chromium-headless-shell")


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("render_report: no Chromium found (apt-get install chromium, or pass --chromium PATH)")


def screenshot(html: Path, out: Path, *, chromium: str, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="render-report-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"render_report: chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="a directory holding report.html (distilforge report DIR)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=3200)
    p.add_argument("--chromium", help=f"the browser binary (default: the first of {', '.join(CANDIDATES)} on PATH)")
    args = p.parse_args(argv)
    html = args.dir / "report.html"
    if not html.is_file():
        raise SystemExit(f"render_report: {html} not found; write it with distilforge.report.write_report first")
    screenshot(html, args.out, chromium=find_chromium(args.chromium), width=args.width, height=args.height)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
