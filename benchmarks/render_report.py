"""Screenshot DIR/report.html in headless Chromium, to look at the report as a person would.

    .venv/bin/python benchmarks/render_report.py DIR OUT.png [--width 1280] [--height 3200]

The README's picture of the report, from a full build of the default model (DIR is left untouched: its
manifest.json and bench.json are copied to a temporary directory and the report is written there):

    .venv/bin/python benchmarks/render_report.py artifacts docs/images/report.png --copy --until table --colors 96

Needs a Chromium binary (Debian: `apt-get install chromium`, /usr/bin/chromium); `--chromium PATH` picks
another. Drives it with the `playwright` package when installed (it crops to an element), else with Chromium's
own `--screenshot` (window-sized). The page is loaded from file:// with the network off: report.html has no
external assets.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome", "chromium-headless-shell")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
REPORT_INPUTS = ("manifest.json", "bench.json")  # all that write_report reads


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else CANDIDATES):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("render_report: no Chromium found (apt-get install chromium, or pass --chromium PATH)")


def screenshot(html: Path, out: Path, *, chromium: str, width: int, height: int, until: str | None = None) -> None:
    """A PNG of the page `width` wide: cropped just below the first element matching `until` (a CSS selector)
    when given and playwright is installed, else the top `height` pixels."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None:
        if until:
            print("render_report: playwright is not installed; --until ignored, the picture is --height tall")
        _screenshot_cli(html, out, chromium=chromium, width=width, height=height)
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(FLAGS[1:]))
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(html.resolve().as_uri())
        bottom = height
        if until:
            box = page.locator(until).first.bounding_box()
            if box is None:
                raise SystemExit(f"render_report: nothing in {html} matches {until!r}")
            bottom = box["y"] + box["height"] + 16
        page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": width, "height": bottom}, full_page=True)
        browser.close()


def _screenshot_cli(html: Path, out: Path, *, chromium: str, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="render-report-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", html.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"render_report: chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def report_in_copy(build: Path, into: Path) -> Path:
    """Copy the build's manifest.json and bench.json into `into` and write the report there, as
    `distilforge report` would (the build directory is not touched)."""
    from distilforge.report import write_report

    for name in REPORT_INPUTS:
        if (build / name).is_file():
            shutil.copy2(build / name, into / name)
    write_report(into)
    return into


def reduce_colors(png: Path, colors: int) -> None:
    """Re-save the PNG with a palette of `colors` (Pillow): a report is flat colours, so it stays sharp."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="a directory holding report.html (distilforge report DIR), or with --copy "
                                          "a build's directory")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--copy", action="store_true", help="write the report from DIR's manifest.json and bench.json "
                                                       "into a temporary directory and picture that")
    p.add_argument("--until", help="crop just below the first element matching this CSS selector ('table': the "
                                   "recommendation, the main plot and the table; needs playwright)")
    p.add_argument("--colors", type=int, default=0, help="reduce the PNG to this many colours (needs Pillow)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=3200)
    p.add_argument("--chromium", help=f"the browser binary (default: the first of {', '.join(CANDIDATES)} on PATH)")
    args = p.parse_args(argv)
    chromium = find_chromium(args.chromium)
    with tempfile.TemporaryDirectory(prefix="render-report-") as tmp:
        folder = report_in_copy(args.dir, Path(tmp)) if args.copy else args.dir
        html = folder / "report.html"
        if not html.is_file():
            raise SystemExit(f"render_report: {html} not found; write it with distilforge report DIR (or use --copy)")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html, args.out, chromium=chromium, width=args.width, height=args.height, until=args.until)
    if args.colors:
        reduce_colors(args.out, args.colors)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
