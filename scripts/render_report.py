"""Render a report.html to a PNG with headless Chromium, for a person to look at.

    python scripts/render_report.py OUT/report.html report.png [--width 1280] [--height 6000]

Needs ``chromium`` (``apt-get install chromium``) or ``google-chrome`` on PATH. Runs the
structural checks (vlground.report.check) first.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=6000)
    args = ap.parse_args(argv)
    from vlground.report.check import check_report

    print(check_report(args.html))
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        print("no chromium on PATH; apt-get install chromium", file=sys.stderr)
        return 2
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={args.width},{args.height}",
           f"--screenshot={args.png.resolve()}", args.html.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
