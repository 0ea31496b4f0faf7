"""Inpainting masks (box or segmentation) and pasting a generated region into its source.

Masks are PIL ``"L"`` images the size of the source, 255 inside (to be repainted), 0 outside.
A box mask covers every pixel the box touches: columns ``floor(x)`` to ``ceil(x + w) - 1``
(and rows alike), so the object's partial border pixels are repainted too. ``dilate`` grows
the mask by that many pixels (a square neighbourhood), clipped to the image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from vlground.errors import InputError


def box_mask(size: tuple[int, int], bbox_xywh: Sequence[float], dilate: int = 0) -> Image.Image:
    """``"L"`` mask of ``size = (width, height)`` with the box ``(x, y, w, h)`` (grown by ``dilate``) at 255."""
    width, height = size
    x, y, w, h = (float(v) for v in bbox_xywh)
    x0, y0 = max(math.floor(x) - dilate, 0), max(math.floor(y) - dilate, 0)
    x1, y1 = min(math.ceil(x + w) + dilate, width), min(math.ceil(y + h) + dilate, height)
    mask = Image.new("L", (width, height), 0)
    if x1 > x0 and y1 > y0:
        mask.paste(255, (x0, y0, x1, y1))
    return mask


def array_mask(mask: np.ndarray, dilate: int = 0) -> Image.Image:
    """``"L"`` mask from a ``[height, width]`` bool array, grown by ``dilate`` pixels."""
    image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
    if dilate > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * dilate + 1))
    return image


def binarize(mask: Image.Image | np.ndarray) -> Image.Image:
    """Any mask (``"1"``, ``"L"``, bool / uint8 array) as an ``"L"`` image of exactly 0 and 255 (>= 128 is inside)."""
    if isinstance(mask, np.ndarray):
        arr = mask.astype(bool) if mask.dtype == bool else mask >= 128
        return Image.fromarray(np.where(arr, 255, 0).astype(np.uint8), mode="L")
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def paste_outside(source: Image.Image, generated: Image.Image, mask: Image.Image | np.ndarray) -> Image.Image:
    """``generated`` inside ``mask``, ``source`` everywhere else (exactly, pixel for pixel).

    ``generated`` is resized to the source size (Lanczos) when it differs and converted to the
    source's mode; ``mask`` must be the source size (``"L"``: >= 128 is inside). The result is a
    new image; outside the mask it equals ``source`` bit for bit.
    """
    mask_image = binarize(mask)
    if mask_image.size != source.size:
        raise InputError(f"mask is {mask_image.size[0]}x{mask_image.size[1]}, source is "
                         f"{source.size[0]}x{source.size[1]}")
    if generated.size != source.size:
        generated = generated.resize(source.size, Image.Resampling.LANCZOS)
    if generated.mode != source.mode:
        generated = generated.convert(source.mode)
    return Image.composite(generated, source, mask_image)
