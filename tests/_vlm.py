"""Shared pieces of the VLM adapter tests: a mismatch folder in ``build-mismatch``'s format made
without a diffusion model (the box filled with grey: the pixels differ inside the box only), and
the options every VLM adapter test passes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vlground.datasets.mismatch import BUNDLED_IMAGES

ANNOTATIONS = BUNDLED_IMAGES / "instances.json"


def grey_box_mismatch(out: Path, annotations: Path = ANNOTATIONS, images: Path = BUNDLED_IMAGES) -> Path:
    """One image per annotation with its box filled grey; replacement = the next category by id."""
    src = json.loads(annotations.read_text())
    cats = {c["id"]: c["name"] for c in src["categories"]}
    order = sorted(cats)
    by_id = {im["id"]: im for im in src["images"]}
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for ann in src["annotations"]:
        im = by_id[ann["image_id"]]
        with Image.open(images / im["file_name"]) as f:
            pixels = np.asarray(f.convert("RGB")).copy()
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        pixels[max(y, 0):y + h, max(x, 0):x + w] = 128
        name = f"{Path(im['file_name']).stem}__ann{ann['id']}.png"
        Image.fromarray(pixels).save(out / name)
        repl = order[(order.index(ann["category_id"]) + 1) % len(order)]
        records.append({"id": ann["id"], "file_name": name, "width": im["width"], "height": im["height"],
                        "source_file": im["file_name"], "annotation_id": ann["id"],
                        "original_category": cats[ann["category_id"]], "replacement_category": cats[repl]})
    (out / "annotations.json").write_text(json.dumps({"images": records}))
    return out


def vlm_options(model_dir, mismatch, **extra) -> dict:
    return {"model": str(model_dir), "images": BUNDLED_IMAGES, "annotations": ANNOTATIONS, "mismatch": mismatch,
            "device": "cpu", "batch_size": 4, **extra}
