"""HTML building blocks of ``report.html``: the style sheet (screen and print), sections with
anchors, a table of contents, inlined images and atomic file writes. Tables:
:mod:`vlground.report.tables`; provenance: :mod:`vlground.report.provenance`."""
from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vlground.report.provenance import git_commit, provenance  # noqa: F401  (re-exported)
from vlground.report.tables import table  # noqa: F401  (re-exported)

CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.tbl{margin:.5em 0 1.5em;max-width:100%}
table{border-collapse:collapse;font-size:12px;max-width:100%}caption{caption-side:top;text-align:left;font-size:11px;color:#555}
td,th{border:1px solid #ccc;padding:2px 5px;text-align:right;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f3f3;text-align:center;font-weight:600;overflow-wrap:normal;hyphens:manual}td.t{text-align:left}
table.wrap{width:100%;table-layout:fixed}table.wrap td{text-align:left;overflow-wrap:break-word}
table.claims td.quote{font-size:11px;color:#444}table.claims td.crit{font-size:11px}
.legend{font-size:11px;color:#555;margin:.2em 0}
details.more>summary,details.raw>summary{cursor:pointer;color:#2b6cb0;font-size:12px;margin:.2em 0}
.figs{display:flex;flex-wrap:wrap;gap:6px}.figs img{max-width:49%;height:auto}.figs img.wide{max-width:100%}
pre{background:#f7f7f7;padding:1em;font-size:11px;white-space:pre-wrap;overflow-wrap:anywhere}.note{color:#555;font-size:13px}
.finding{border:2px solid #2b6cb0;background:#f0f6ff;padding:.6em 1.2em;border-radius:6px}
.finding li{margin:.3em 0}.grounded{color:#1a7f37;font-weight:600}.none{color:#9a6700;font-weight:600}
nav.toc{background:#fafafa;border:1px solid #eee;padding:.4em 1.2em;font-size:14px}nav.toc ol{margin:.3em 0}
a.top{font-size:12px;margin-left:.6em}table.prov{margin:.5em 0 1em;width:100%}table.prov th{text-align:left;width:9em}
table.prov td{text-align:left;font-family:monospace;overflow-wrap:anywhere}
@media print{body{max-width:none;margin:0;padding:0;font-size:11pt}a.top,nav.toc a{color:inherit;text-decoration:none}
a.top{display:none}details>summary{display:none}details::details-content{content-visibility:visible;display:contents}
thead{display:table-header-group}tr,img,.finding{break-inside:avoid}h2,h3{break-after:avoid}
.figs img,.figs img.wide{max-width:100%}.figs img:not(.wide){max-width:49%}}"""
#: opens every <details> for printing in browsers without ::details-content (the page needs no script otherwise)
PRINT_SCRIPT = ("<script>addEventListener('beforeprint',()=>document.querySelectorAll('details')"
                ".forEach(d=>{d.dataset.was=d.open;d.open=true}));addEventListener('afterprint',()=>"
                "document.querySelectorAll('details').forEach(d=>{d.open=d.dataset.was==='true'}))</script>")


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` through a temporary file in the same folder and ``os.replace`` (a reader
    never sees half a file; an interrupted write leaves the old file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def slug(text: str) -> str:
    """An HTML id from a title: lower case, letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def img(path: Path, alt: str = "", wide: bool = False) -> str:
    """A PNG inlined as a data URI (the report stays one self-contained file); a figure still
    being drawn by :func:`vlground.report.render.rendering` gets a placeholder filled in later."""
    from vlground.report import render

    r = render.active()
    if r is not None and r.is_pending(Path(path)):
        return r.placeholder(Path(path), alt, wide)
    data = base64.b64encode(Path(path).read_bytes()).decode()
    cls = " class=wide" if wide else ""
    return f'<img{cls} src="data:image/png;base64,{data}" alt="{html.escape(alt or Path(path).stem)}">'


@dataclass
class Section:
    """One report section: a title (its anchor is derived), HTML body, sub-sections."""

    title: str  #: the heading
    body: str  #: HTML under the heading (never empty: a section with nothing to show is left out)
    children: list["Section"] = field(default_factory=list)  #: <h3> sub-sections

    @property
    def anchor(self) -> str:
        return slug(self.title)

    def render(self, level: int = 2) -> str:
        top = '<a class=top href="#top">top</a>' if level == 2 else ""
        kids = "".join(c.render(level + 1) for c in self.children)
        return f'<section id="{self.anchor}"><h{level}>{html.escape(self.title)}{top}</h{level}>{self.body}{kids}</section>'


def toc(sections: list[Section]) -> str:
    items = "".join(
        f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a>'
        + ("<ol>" + "".join(f'<li><a href="#{c.anchor}">{html.escape(c.title)}</a></li>' for c in s.children) + "</ol>" if s.children else "")
        + "</li>" for s in sections)
    return f'<nav class=toc id="contents"><strong>Contents</strong><ol>{items}</ol></nav>'


def page(title: str, intro: str, finding: str, sections: list[Section]) -> str:
    """The whole document: title, key findings box, contents, sections."""
    # anchors must be unique: suffix repeats
    seen: dict[str, int] = {}
    for s in [x for s in sections for x in (s, *s.children)]:
        a = s.anchor
        if a in seen:
            seen[a] += 1
            s.title = f"{s.title} ({seen[a]})"
        else:
            seen[a] = 1
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1 id=top>{html.escape(title)}</h1>"
            f'<div class=finding id="key-findings"><h2 style="border:0;margin-top:.3em">Key findings</h2>{finding}</div>'
            f"{intro}{toc(sections)}{''.join(s.render() for s in sections)}{PRINT_SCRIPT}</body></html>")
