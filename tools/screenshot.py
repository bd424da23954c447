#!/usr/bin/env python3
"""Full-page screenshot of an HTML report with headless Chromium (a developer tool, not part of synthdx).

    python tools/screenshot.py REPORT.html OUT.png [--width 1200] [--height 6000]

The page is rendered into a tall window (--height); when Pillow is installed the blank rows below the
content are cropped off, and if the content reaches the bottom of the window the shot is retaken
twice as tall (up to --max-height), so a long report is not cut. Without Pillow the full window is kept.
Needs Chromium: `apt-get install -y chromium` (Debian), or chromium-browser / google-chrome on PATH
(or set $CHROMIUM to the binary).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and (shutil.which(env) or Path(env).is_file()):
        return shutil.which(env) or env
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _shoot(browser: str, html: Path, out: Path, width: int, height: int, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="synthdx-shot-") as profile:
        cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               "--force-device-scale-factor=1", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=3000",
               f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={width},{height}",
               html.resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or not out.exists():
            sys.stderr.write(r.stderr[-3000:])
            raise SystemExit(f"chromium failed (exit {r.returncode}); command: {' '.join(cmd)}")


def _crop(out: Path, margin: int = 24) -> tuple[bool, int] | None:
    """Crop trailing rows that are all background. Returns (content reaches the bottom, new height),
    or None without Pillow."""
    try:
        from PIL import Image, ImageChops
    except ImportError:
        return None
    with Image.open(out) as im:
        im = im.convert("RGB")
        bg = Image.new("RGB", im.size, im.getpixel((im.width - 1, im.height - 1)))
        box = ImageChops.difference(im, bg).getbbox()
        if box is None:
            return False, im.height
        bottom = box[3]
        reaches = bottom >= im.height - 2
        new_h = min(im.height, bottom + margin)
        if new_h < im.height:
            im.crop((0, 0, im.width, new_h)).save(out, optimize=True)
        return reaches, new_h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, help="the HTML file")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--width", type=int, default=1200, help="window width in CSS pixels (default 1200)")
    ap.add_argument("--height", type=int, default=6000, help="initial window height (default 6000)")
    ap.add_argument("--max-height", type=int, default=24000, help="retake taller up to this (default 24000)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per Chromium run (default 120)")
    args = ap.parse_args(argv)

    if not args.html.is_file():
        ap.error(f"{args.html} is not a file")
    browser = find_browser()
    if browser is None:
        print("No Chromium found (looked for: " + ", ".join(_CANDIDATES) + ", and $CHROMIUM).\n"
              "Install it, e.g. on Debian/Ubuntu:  apt-get update && apt-get install -y chromium",
              file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    height = args.height
    while True:
        _shoot(browser, args.html, args.out, args.width, height, args.timeout)
        cropped = _crop(args.out)
        if cropped is None:
            print(f"{args.out}: {args.width}x{height} (install Pillow to crop the blank bottom)")
            return 0
        reaches, new_h = cropped
        if reaches and height * 2 <= args.max_height:
            height *= 2
            continue
        note = " (the page may continue below: raise --max-height)" if reaches else ""
        print(f"{args.out}: {args.width}x{new_h}{note}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
