"""Shared pieces of the VLM adapter tests: a mismatch folder made without a diffusion model
(:func:`vlground.testing.grey_box_mismatch`) and the options every VLM adapter test passes."""
from __future__ import annotations

from pathlib import Path

from vlground.datasets.mismatch import BUNDLED_IMAGES
from vlground.testing import grey_box_mismatch as _grey

ANNOTATIONS = BUNDLED_IMAGES / "instances.json"


def grey_box_mismatch(out: Path, annotations: Path = ANNOTATIONS, images: Path = BUNDLED_IMAGES) -> Path:
    return _grey(out, annotations, images)


def vlm_options(model_dir, mismatch, **extra) -> dict:
    return {"model": str(model_dir), "images": BUNDLED_IMAGES, "annotations": ANNOTATIONS, "mismatch": mismatch,
            "device": "cpu", "batch_size": 4, **extra}
