"""Any image file as 8-bit RGB, its range kept: the one conversion every reader of pixels uses.

Pillow's ``convert("RGB")`` clips a 16-bit greyscale image (modes ``I;16``, ``I``: values up to
65535) at 255, so most of it turns white, and a float image (mode ``F``) likewise.
:func:`to_rgb` rescales those to 0-255 first (16-bit: divided by 257, so 65535 -> 255; float:
0-1 when its values are within 0-1, else taken as 0-255), then converts.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

#: Pillow modes of more than 8 bits per grey value
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit ``RGB`` image; 16-bit and float greyscale are rescaled, not clipped."""
    if im.mode not in WIDE_MODES:
        return im.convert("RGB")
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.min() >= 0 and finite.max() <= 1 else 1.0
        arr = np.nan_to_num(arr) * scale
    elif im.mode.startswith("I;16") or arr.max(initial=0) > 255:  # 16-bit samples ("I" from a 16-bit PNG)
        arr = arr / 257.0
    grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return grey.convert("RGB")


__all__ = ["to_rgb", "WIDE_MODES"]
