"""Tiny Stable-Diffusion-2-inpainting pipelines for tests (no download).

``get_dummy_components()`` mirrors diffusers' tests; :func:`tiny_sd_folder` saves a pipeline with
``save_pretrained`` so tests load it exactly as users load a model (``from_pretrained(folder)``,
``--model FOLDER``). The builder itself lives in :mod:`vlground.vision.tiny` so the demo can use
it at run time. :data:`FAST` are call settings that keep one image well under a second on a CPU.
"""
from __future__ import annotations

from pathlib import Path

from vlground.vision.tiny import save_tiny_inpaint_pipeline, tiny_inpaint_components

#: DiffusersInpainter / MismatchConfig settings for fast tests: 2 steps, 32 px, no guidance batch
FAST = {"steps": 2, "resolution": 32, "guidance_scale": 1.0}


def get_dummy_components(seed: int = 0) -> dict:
    return tiny_inpaint_components(seed)


def tiny_sd_folder(root: Path, seed: int = 0) -> Path:
    """Save a tiny SD2-inpainting pipeline under ``root/tiny-sd2-inpaint`` (once) and return the folder."""
    folder = Path(root) / "tiny-sd2-inpaint"
    if not (folder / "model_index.json").is_file():
        save_tiny_inpaint_pipeline(folder, seed)
    return folder


def write_not_inpainting_folder(folder: Path) -> Path:
    """A pipeline folder whose UNet has 4 input channels (text-to-image), configs only."""
    import json

    folder = Path(folder)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel",
                                                              "in_channels": 4}))
    return folder
