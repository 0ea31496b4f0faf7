"""Render a report.html to a PNG with headless Chromium, for a person to look at.

    python scripts/render_report.py OUT/report.html report.png [--width 1280] [--height 6000]
    python scripts/render_report.py OUT/report.html shots/ --sections   # first screen + one PNG per section

Needs ``chromium`` (``apt-get install chromium``) or ``google-chrome`` on PATH. Runs the
structural checks (vlground.report.check) first, then measures every table at the width
(vlground.report.layout) and lists any that is cut off or hidden in a scroll box (exit 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=6000)
    ap.add_argument("--sections", action="store_true", help="PNG is a folder: the first screen and one PNG per section")
    args = ap.parse_args(argv)
    from vlground.report import layout
    from vlground.report.check import check_report

    print(check_report(args.html))
    if layout.find_chromium() is None:
        print(layout.INSTALL_HINT, file=sys.stderr)
        return 2
    bad = layout.problems(layout.measure_tables(args.html, args.width))
    for line in bad:
        print(f"cut off: {line}", file=sys.stderr)
    if args.sections:
        for p in layout.section_screenshots(args.html, args.png, args.width):
            print(p)
    else:
        print(layout.screenshot(args.html, args.png, args.width, args.height))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
