"""Structural checks of a ``report.html`` (used by the tests and ``scripts/render_report.py``):
every image decodes, every in-page link resolves, no section is empty, the page stands alone."""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.sections: list[dict] = []  # {"id", "text", "images", "tables"}
        self._stack: list[dict] = []
        self._in_heading = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a.get("src", ""))
            for s in self._stack:
                s["images"] += 1
        if tag == "table":
            for s in self._stack:
                s["tables"] += 1
        if tag in ("h2", "h3", "h4"):
            self._in_heading += 1
        if tag == "section":
            self._stack.append({"id": a.get("id"), "text": "", "images": 0, "tables": 0})

    def handle_endtag(self, tag):
        if tag in ("h2", "h3", "h4"):
            self._in_heading -= 1
        if tag == "section" and self._stack:
            self.sections.append(self._stack.pop())

    def handle_data(self, data):
        if self._in_heading:
            return
        for s in self._stack:
            s["text"] += data


def check_report(path: str | Path) -> dict:
    """Parse ``path``; raise ``AssertionError`` naming the first problem. Returns
    ``{"sections": [ids], "images": n, "links": n}``."""
    from PIL import Image

    text = Path(path).read_text(encoding="utf-8")
    p = _Collect()
    p.feed(text)
    assert len(set(p.ids)) == len(p.ids), f"duplicate ids: {sorted({i for i in p.ids if p.ids.count(i) > 1})}"
    for href in p.links:
        if href.startswith("#"):
            assert href[1:] in p.ids, f"link {href} resolves to no element"
    for i, src in enumerate(p.images):
        assert src.startswith("data:image/png;base64,"), f"image {i} is not inlined: {src[:60]}"
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.verify()
    for s in p.sections:
        title_only = not s["text"].strip() and not s["images"] and not s["tables"]
        assert not title_only, f"section {s['id']} is empty"
    low = text.lower()
    assert "<script src" not in low and 'src="http' not in low and "<link" not in low, "the report must stand alone"
    return {"sections": [s["id"] for s in p.sections], "images": len(p.images), "links": len(p.links)}
