"""Stable Diffusion inpainting behind one small call: ``inpainter(image, mask, prompt, seed) -> image``.

:class:`DiffusersInpainter` loads a diffusers ``StableDiffusionInpaintPipeline`` (a hub id or a
local ``save_pretrained`` folder) whose UNet takes 9 input channels (latents + mask + masked
image: SD2-inpainting, SD1.5-inpainting); any other pipeline is refused. The safety checker is
not loaded (SD2-inpainting ships without one). On a GPU it runs in float16, on a CPU in float32.

One call: the image and mask are resized so the longer side is ``resolution`` (default: the
pipeline's native size, ``unet.sample_size * vae_scale_factor``, 512 for SD2) and both sides are
multiples of 8; the mask is resized with bilinear filtering and any touched pixel is kept inside,
so small objects survive; the pipeline runs with a CPU ``torch.Generator`` seeded with ``seed``
(the same latents on any device); the output is resized back to the input size. Pasting the
source back outside the mask is the caller's job (:func:`vlground.vision.masks.paste_outside`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vlground.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"


class Inpainter(Protocol):
    def __call__(self, image: Image.Image, mask: Image.Image, prompt: str, seed: int) -> Image.Image:
        """Repaint ``image`` (RGB) where ``mask`` (``"L"``, 255 inside) is set; same size out."""


def check_inpaint_folder(folder: Path) -> None:
    """Raise a one-line :class:`InputError` unless ``folder`` holds a 9-channel inpainting pipeline."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise InputError(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
    unet_config = folder / "unet" / "config.json"
    if not unet_config.is_file():
        raise InputError(f"{folder}: not an inpainting pipeline (no unet/config.json)")
    try:
        channels = json.loads(unet_config.read_text()).get("in_channels")
    except json.JSONDecodeError as exc:
        raise InputError(f"{unet_config}: not JSON ({exc})") from None
    if channels != 9:
        kind = json.loads(index.read_text()).get("_class_name", "pipeline")
        raise InputError(f"{folder}: not an inpainting pipeline ({kind}, unet has {channels} input channels, "
                         "expected 9)")


def _dtype_keyword() -> str:
    """``dtype`` on diffusers versions that renamed ``torch_dtype`` (and warn about it), else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


@dataclass
class DiffusersInpainter:
    """A loaded inpainting pipeline with its call settings (see the module docstring)."""

    pipe: Any
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str | None = None
    resolution: int | None = None

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: str = "auto", **settings: Any
             ) -> "DiffusersInpainter":
        """Load ``model`` (hub id or local folder); ``device`` / ``dtype`` ``auto`` pick cuda + float16 when present."""
        from vlground.errors import require

        require("diffusers", "vision", "inpainting (build-mismatch --inpaint)")
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        if dtype not in ("float16", "bfloat16", "float32"):
            raise InputError(f"dtype {dtype!r}: expected auto, float16, bfloat16 or float32")
        local = Path(model).expanduser()
        if local.exists():
            if not local.is_dir():
                raise InputError(f"{model}: not a diffusers pipeline folder (a file)")
            check_inpaint_folder(local)
        try:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                str(local) if local.exists() else model, **{_dtype_keyword(): getattr(torch, dtype)},
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if len(first) > 200:
                first = first[:197] + "..."
            where = "hub id (not a local folder)" if not local.exists() else "folder"
            raise InputError(f"{model}: cannot load an inpainting pipeline from this {where}: {first}") from None
        if pipe.unet.config.in_channels != 9:
            raise InputError(f"{model}: not an inpainting pipeline (unet has {pipe.unet.config.in_channels} "
                             "input channels, expected 9)")
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        log.info("loaded %s on %s (%s)", model, device, dtype)
        return cls(pipe, **settings)

    def work_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` the pipeline runs at: longer side ``resolution``, both multiples of 8."""
        side = self.resolution or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        scale = side / max(width, height)
        return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)

    def __call__(self, image: Image.Image, mask: Image.Image, prompt: str, seed: int) -> Image.Image:
        import torch

        w, h = self.work_size(*image.size)
        small_image = image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
        small_mask = mask.convert("L").resize((w, h), Image.Resampling.BILINEAR).point(lambda v: 255 if v else 0)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            out = self.pipe(
                prompt=prompt, image=small_image, mask_image=small_mask, height=h, width=w,
                num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                negative_prompt=self.negative_prompt, generator=generator,
            ).images[0]
        return out.resize(image.size, Image.Resampling.LANCZOS)
