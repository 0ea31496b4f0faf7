"""HTML building blocks of ``report.html``: sections with anchors, a table of contents, tables
in scroll containers, inlined images, the provenance block, and atomic file writes."""
from __future__ import annotations

import base64
import html
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.scroll{overflow-x:auto;max-height:480px;overflow-y:auto;margin:.5em 0 1.5em;border:1px solid #eee}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}.figs{display:flex;flex-wrap:wrap;gap:6px}.figs img{max-width:49%;height:auto}
.figs img.wide{max-width:100%}pre{background:#f7f7f7;padding:1em;font-size:11px;overflow-x:auto}.note{color:#555;font-size:13px}
.finding{border:2px solid #2b6cb0;background:#f0f6ff;padding:.6em 1.2em;border-radius:6px}
.finding li{margin:.3em 0}.grounded{color:#1a7f37;font-weight:600}.none{color:#9a6700;font-weight:600}
nav.toc{background:#fafafa;border:1px solid #eee;padding:.4em 1.2em;font-size:14px}nav.toc ol{margin:.3em 0}
a.top{font-size:12px;margin-left:.6em}table.prov{margin:.5em 0 1em}table.prov th{text-align:left;position:static}
table.prov td{text-align:left;white-space:normal;word-break:break-all;font-family:monospace}"""


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


def fmt(v) -> str:
    """A table cell: 3 significant digits for small floats, en dash for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return html.escape(str(v))


def table(rows: list[dict], cols: list[str] | None = None, limit: int = 200) -> str:
    """An HTML table in a scroll container (wide tables scroll instead of running off the page)."""
    if not rows:
        return "<p class=note>No rows.</p>"
    if cols is None:
        cols = []
        for r in rows:
            cols.extend(k for k in r if k not in cols and not isinstance(r[k], (list, dict)))
    cols = [c for c in cols if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows[:limit])
    more = f"<p class=note>{len(rows) - limit} more rows in the CSV / Parquet files.</p>" if len(rows) > limit else ""
    return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>{more}"


def img(path: Path, alt: str = "", wide: bool = False) -> str:
    """A PNG inlined as a data URI (the report stays one self-contained file)."""
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
            f"{intro}{toc(sections)}{''.join(s.render() for s in sections)}</body></html>")


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001  (not installed / no metadata)
        return "not installed"


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the vlground source tree, when it is a git checkout (else None)."""
    where = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def provenance(command: str | None = None, extra: dict | None = None) -> dict:
    """Versions, commit, date and command line, for the report's last section."""
    import vlground

    prov = {
        "vlground": vlground.__version__,
        "git commit": git_commit() or "not a git checkout",
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "statsmodels": _version("statsmodels"),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or "(written in-process: vlground.report.write_report)",
    }
    prov.update(extra or {})
    return prov
