"""Does a ``report.html`` read whole at a given window width? Measured in headless Chromium.

:func:`measure_tables` opens a copy of the report (with a measuring script added; the report
itself holds none that runs on load) at ``width`` x ``height`` pixels, opens every ``<details>``
(so folded rows are measured too) and returns, per table, its box against the window and its
container, and the first ancestor that clips it in a scroll box. :func:`problems` turns that into
one line per table that is cut off. Used by the tests and ``scripts/render_report.py``.

Needs a Chromium-family browser: the file named by ``$VLGROUND_CHROMIUM``, else the first of
:data:`BROWSERS` on PATH (Debian/Ubuntu: ``apt-get install chromium``); :func:`find_chromium` returns
None when there is none. No package on PyPI ships one inside its wheel: playwright, pyppeteer,
selenium and kaleido (1.x) download a browser from their vendors' servers at install or run time,
so the test extra cannot bring it; a machine gets it from its system packages.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: flags for a quiet, offline, throw-away headless browser
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio")

_SCRIPT = """<script>(function(){
if(OPEN_DETAILS)document.querySelectorAll('details').forEach(function(d){d.open=true});
var W=window.innerWidth,out=[];
document.querySelectorAll('table').forEach(function(t,i){
 var r=t.getBoundingClientRect(),clip=null,sec=t.closest('section');
 for(var e=t.parentElement;e&&e!==document.body;e=e.parentElement){
  var cs=getComputedStyle(e);
  if(/(auto|scroll|hidden)/.test(cs.overflowX+' '+cs.overflowY)&&(e.scrollWidth>e.clientWidth+1||e.scrollHeight>e.clientHeight+1)){
   clip=e.tagName.toLowerCase()+(e.className?'.'+e.className:'');break;}}
 out.push({index:i,section:sec?sec.id:'',left:r.left,right:r.right,width:r.width,scroll_width:t.scrollWidth,
  container_width:t.parentElement.clientWidth,clipped_by:clip,columns:t.rows.length?t.rows[0].cells.length:0});
});
var secs=[];document.querySelectorAll('body>section').forEach(function(s){var b=s.getBoundingClientRect();
 secs.push({id:s.id,top:b.top+window.scrollY,bottom:b.bottom+window.scrollY});});
var p=document.createElement('pre');p.id='vlground-layout';
p.textContent=JSON.stringify({window:W,page_width:document.documentElement.scrollWidth,
 page_height:document.documentElement.scrollHeight,sections:secs,tables:out});
document.body.appendChild(p);})();</script>"""


@dataclass(frozen=True)
class TableBox:
    """One table's box at the measured width (pixels)."""

    index: int  #: position among the page's tables
    section: str  #: id of the innermost section holding it
    left: float  #: left edge
    right: float  #: right edge (past the window width = cut off)
    width: float  #: rendered width
    scroll_width: float  #: content width (more than ``container_width`` = it overflows its container)
    container_width: float  #: width of the element holding it
    clipped_by: str | None  #: an ancestor scroll box that hides part of it, or None
    columns: int  #: cells in its first row


@dataclass(frozen=True)
class Layout:
    """What :func:`measure_tables` saw."""

    window: int  #: the window's inner width
    page_width: int  #: the document's scroll width (more than ``window`` = the page scrolls sideways)
    tables: list[TableBox]
    page_height: int = 0  #: the document's height (pixels)
    sections: tuple = ()  #: ``{"id", "top", "bottom"}`` of each top-level section (pixels from the top)


#: Chromium-family executables looked up on PATH, in this order
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "chrome-headless-shell")
#: what to do without one (the skip reason of the layout tests, the error of :func:`measure_tables`)
INSTALL_HINT = (f"no Chromium-family browser: $VLGROUND_CHROMIUM names none and none of {', '.join(BROWSERS)} is on "
                "PATH; install the system package (Debian/Ubuntu: apt-get install chromium): none on PyPI ships one")


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``$VLGROUND_CHROMIUM`` when set (an executable path or a
    name on PATH), else the first of :data:`BROWSERS` on PATH; None when there is none."""
    chosen = os.environ.get("VLGROUND_CHROMIUM")
    if chosen:
        return shutil.which(chosen)
    return next((shutil.which(n) for n in BROWSERS if shutil.which(n)), None)


def _run(args: list[str], timeout: int) -> str:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="vlground-chromium-") as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def measure_tables(report: str | Path, width: int = 1280, height: int = 900, timeout: int = 120,
                   open_details: bool = True) -> Layout:
    """Every table's box in ``report`` at ``width`` x ``height`` (see the module docstring);
    ``open_details=False`` measures the page as it first shows (folded rows folded)."""
    text = Path(report).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="vlground-layout-") as tmp:
        page = Path(tmp) / "measure.html"
        page.write_text(text.replace("</body>", _SCRIPT.replace("OPEN_DETAILS", "true" if open_details else "false") + "</body>"), encoding="utf-8")
        dom = _run([f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], timeout)
    m = re.search(r'<pre id="vlground-layout">(.*?)</pre>', dom, re.S)
    if m is None:
        raise RuntimeError("the measuring script did not run (no layout in the dumped DOM)")
    import html

    data = json.loads(html.unescape(m.group(1)))
    return Layout(int(data["window"]), int(data["page_width"]), [TableBox(**t) for t in data["tables"]],
                  int(data["page_height"]), tuple(data["sections"]))


def problems(layout: Layout, slack: float = 1.0) -> list[str]:
    """One line per table cut off at the window's right edge, wider than its container, or
    hidden in a scroll box; and one if the page itself scrolls sideways."""
    out = []
    if layout.page_width > layout.window + slack:
        out.append(f"the page is {layout.page_width} px wide in a {layout.window} px window (it scrolls sideways)")
    for t in layout.tables:
        where = f"table {t.index} ({t.columns} columns) in section {t.section or '(none)'}"
        if t.right > layout.window + slack:
            out.append(f"{where}: right edge at {t.right:.0f} px, past the {layout.window} px window")
        if t.scroll_width > t.container_width + slack:
            out.append(f"{where}: {t.scroll_width:.0f} px of content in a {t.container_width:.0f} px container")
        if t.clipped_by:
            out.append(f"{where}: hidden in a scroll box ({t.clipped_by})")
    return out


def section_screenshots(report: str | Path, folder: str | Path, width: int = 1280, max_height: int = 2400) -> list[Path]:
    """``first-screen.png`` (the top ``900`` px) and one PNG per top-level section (cut from one
    full-page screenshot at ``width``; a section taller than ``max_height`` is cut at it)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lay = measure_tables(report, width, open_details=False)
    full = screenshot(report, folder / "full-page.png", width, max(900, lay.page_height + 20))
    out = []
    with Image.open(full) as im:
        im.crop((0, 0, width, min(900, im.height))).save(folder / "first-screen.png")
        out.append(folder / "first-screen.png")
        for i, s in enumerate(lay.sections):
            top, bottom = int(s["top"]), int(min(s["bottom"], s["top"] + max_height))
            path = folder / f"section-{i + 1:02d}-{s['id']}.png"
            im.crop((0, top, width, min(bottom, im.height))).save(path)
            out.append(path)
    return out


def screenshot(report: str | Path, png: str | Path, width: int = 1280, height: int = 900, timeout: int = 120) -> Path:
    """A PNG of the report's first ``height`` pixels at ``width`` (a ``#fragment`` in ``report`` is not
    followed by headless screenshots: pass a page cut to a section instead)."""
    png = Path(png).resolve()
    _run([f"--window-size={width},{height}", f"--screenshot={png}", Path(report).resolve().as_uri()], timeout)
    return png
