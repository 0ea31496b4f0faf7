"""Map a box in original image pixels to the vision encoder's patch grid.

This is the one implementation every adapter uses (LLaVA-1.5, the DINOv2 testbed): the box goes
through the same geometric steps as the image in the model's own preprocessing, described by a
:class:`Preprocess` (built by hand or read from a transformers image processor with
:meth:`Preprocess.from_processor`).

Coordinates are continuous pixel edges: a box ``(x, y, w, h)`` (COCO ``bbox``) covers
``[x, x + w) x [y, y + h)`` and pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``. A resize from
``W`` to ``W'`` maps ``x -> x * W' / W`` (each axis on its own, as PIL and torchvision do).

Steps, in the order the processors apply them:

1. ``pad_to_square`` only: pad to a ``max(W, H)`` square, image centred, offsets
   ``((S - W) // 2, (S - H) // 2)`` (LLaVA-1.5's ``expand2square`` / ``LlavaImageProcessor(do_pad)``).
2. resize: ``shortest_edge`` and ``pad_to_square`` scale the short side to ``size`` and the long
   side to ``int(size * long / short)`` (transformers' rule, truncating); ``resize`` goes to
   ``size x size`` (or ``(height, width)``) whatever the aspect ratio.
3. centre crop to ``crop_size`` when set: offsets ``(H' - ch) // 2`` and ``(W' - cw) // 2``
   (transformers' PIL and torchvision backends agree); a crop larger than the image pads.
4. the ``grid_h x grid_w`` grid of ``patch_size`` patches (``grid = side // patch_size``).

**Edge rule.** A patch is inside the box when at least ``min_overlap`` (default 0.5) of its area is
inside the box (after clipping the box to the model input). The patch holding the centre of the
visible part of the box always counts, so a box smaller than a patch still has one patch. A box
with no visible part after cropping gives an empty mask and a ``problem`` line.

Patch indices are row-major over the grid (``row * grid_w + col``), the order of the patch
tokens after any prefix tokens (CLS, registers): the adapter adds its own prefix offset.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vlground.errors import InputError

ResizeMode = Literal["shortest_edge", "pad_to_square", "resize"]
_MODES = ("shortest_edge", "pad_to_square", "resize")


@dataclass(frozen=True)
class Preprocess:
    """The geometry of a vision encoder's preprocessing (no colour steps)."""

    mode: ResizeMode
    """``shortest_edge``: resize the short side to ``size`` keeping the aspect ratio (CLIP,
    LLaVA-1.5's HF processor, DINOv2's BitImageProcessor). ``pad_to_square``: pad to a square
    first, then as ``shortest_edge`` (LLaVA-1.5 ``image_aspect_ratio="pad"``). ``resize``: resize to
    ``size`` exactly, ignoring the aspect ratio (ViTImageProcessor)."""
    size: int | tuple[int, int]
    """Target short side (``shortest_edge``, ``pad_to_square``) or output ``(height, width)`` /
    square side (``resize``)."""
    patch_size: int
    """Side of one square patch in model-input pixels (14 for CLIP ViT-L/14-336 and DINOv2)."""
    crop_size: tuple[int, int] | None = None
    """``(height, width)`` of the centre crop after resizing, or None for no crop."""

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InputError(f"preprocess mode {self.mode!r}: expected one of {', '.join(_MODES)}")
        if isinstance(self.size, Sequence):
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
            if self.mode != "resize":
                raise InputError(f"preprocess mode {self.mode}: size must be one int, got {self.size}")
        if self.crop_size is not None:
            object.__setattr__(self, "crop_size", (int(self.crop_size[0]), int(self.crop_size[1])))
        if self.patch_size <= 0:
            raise InputError(f"preprocess: patch_size must be positive, got {self.patch_size}")

    # ----------------------------------------------------------------- presets and builders
    @classmethod
    def llava15(cls, pad: bool = False) -> "Preprocess":
        """LLaVA-1.5 (CLIP ViT-L/14-336): 336 px, 24x24 patches; ``pad`` for ``image_aspect_ratio=pad``."""
        return cls("pad_to_square" if pad else "shortest_edge", 336, 14, (336, 336))

    @classmethod
    def dinov2(cls) -> "Preprocess":
        """DINOv2's processor: short side 256, centre crop 224, 16x16 patches of 14 px."""
        return cls("shortest_edge", 256, 14, (224, 224))

    @classmethod
    def from_processor(
        cls, processor: Any, patch_size: int | None = None, config: Any = None, pad_to_square: bool | None = None
    ) -> "Preprocess":
        """Read the geometry of a transformers image processor (object or its config dict).

        ``CLIPImageProcessor``, ``LlavaImageProcessor`` (``do_pad``), ``BitImageProcessor``
        (DINOv2) and ``ViTImageProcessor`` (``size={"height", "width"}``) are understood.
        ``patch_size`` comes from the argument, else ``config.vision_config.patch_size`` or
        ``config.patch_size``. ``pad_to_square`` overrides the processor (LLaVA's original code pads
        in the caller, not in the processor).
        """
        proc = getattr(processor, "image_processor", processor)  # a ProcessorMixin wraps one
        get = (lambda k: proc.get(k)) if isinstance(proc, Mapping) else (lambda k: getattr(proc, k, None))
        name = type(proc).__name__ if not isinstance(proc, Mapping) else str(proc.get("image_processor_type"))
        if patch_size is None:
            vision = getattr(config, "vision_config", None) or config
            patch_size = getattr(vision, "patch_size", None) if vision is not None else None
            patch_size = patch_size or get("patch_size")
        if patch_size is None:
            raise InputError(f"{name}: no patch size (pass patch_size or the model config)")
        if isinstance(patch_size, Mapping):
            patch_size = patch_size.get("height")
        size = _as_dict(get("size"))
        do_resize = get("do_resize")
        if do_resize is False or not size:
            raise InputError(f"{name}: cannot describe a processor without a resize (size={size})")
        crop = None
        if get("do_center_crop"):
            c = _as_dict(get("crop_size"))
            crop = (int(c["height"]), int(c["width"])) if "height" in c else (int(c["size"]),) * 2
        pad = bool(get("do_pad")) and "Llava" in name if pad_to_square is None else pad_to_square
        if size.get("shortest_edge"):
            if size.get("longest_edge"):
                raise InputError(f"{name}: size {size} gives pixel counts (dynamic resolution, e.g. Qwen2-VL): "
                                 "each image has its own grid; the adapter must compute it per image (image_layout, "
                                 "see docs/adapters.md)")
            return cls("pad_to_square" if pad else "shortest_edge", int(size["shortest_edge"]), int(patch_size), crop)
        if size.get("height") and size.get("width"):
            if pad:
                raise InputError(f"{name}: pad_to_square needs a shortest_edge size, got {size}")
            return cls("resize", (int(size["height"]), int(size["width"])), int(patch_size), crop)
        raise InputError(f"{name}: unsupported size {size}")

    @classmethod
    def from_pretrained(cls, name_or_path: str, pad_to_square: bool | None = None) -> "Preprocess":
        """Load the image processor and model config of a checkpoint and read them."""
        from transformers import AutoConfig, AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(name_or_path)
        config = AutoConfig.from_pretrained(name_or_path)
        return cls.from_processor(processor, config=config, pad_to_square=pad_to_square)

    # ----------------------------------------------------------------- geometry
    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the model input for an original image of that size."""
        if self.crop_size is not None:
            return self.crop_size[1], self.crop_size[0]
        return self._transform(width, height)[1]

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """``(grid_h, grid_w)`` for an original image of that size."""
        w, h = self.input_size(width, height)
        return h // self.patch_size, w // self.patch_size

    def map_xyxy(self, xyxy: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
        """Map ``(x0, y0, x1, y1)`` from original pixels to model-input pixels (not clipped)."""
        (pl, pt, sw, sh), (rw, rh), (cl, ct) = self._transform(width, height)
        x0, y0, x1, y1 = xyxy
        sx, sy = rw / sw, rh / sh
        return ((x0 + pl) * sx - cl, (y0 + pt) * sy - ct, (x1 + pl) * sx - cl, (y1 + pt) * sy - ct)

    def affine(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(sx, sy, tx, ty)``: original pixel ``(x, y)`` -> model-input pixel ``(x * sx + tx, y * sy + ty)``."""
        (pl, pt, sw, sh), (rw, rh), (cl, ct) = self._transform(width, height)
        sx, sy = rw / sw, rh / sh
        return sx, sy, pl * sx - cl, pt * sy - ct

    def _transform(self, width: int, height: int):
        # (pad_left, pad_top, padded_w, padded_h), (resized_w, resized_h), (crop_left, crop_top)
        if width <= 0 or height <= 0:
            raise InputError(f"image size {width}x{height}: must be positive")
        pl = pt = 0
        sw, sh = width, height
        if self.mode == "pad_to_square":
            s = max(width, height)
            pl, pt, sw, sh = (s - width) // 2, (s - height) // 2, s, s
        if self.mode == "resize":
            rh, rw = self.size if isinstance(self.size, tuple) else (self.size, self.size)
        else:
            short, long = min(sw, sh), max(sw, sh)
            new_long = int(self.size * long / short)
            rw, rh = (self.size, new_long) if sw <= sh else (new_long, self.size)
        cl = ct = 0
        if self.crop_size is not None:
            ch, cw = self.crop_size
            # torchvision backend pads a too-small image by ((c - s) // 2) before cropping
            cl = (rw - cw) // 2 if rw >= cw else -((cw - rw) // 2)
            ct = (rh - ch) // 2 if rh >= ch else -((ch - rh) // 2)
        return (pl, pt, sw, sh), (rw, rh), (cl, ct)


@dataclass(frozen=True)
class PatchMask:
    """The patches a box covers on the encoder's grid."""

    mask: np.ndarray
    """``[grid_h, grid_w]`` bool, True for patches inside the box."""
    indices: np.ndarray
    """``[n]`` int64 row-major indices (``row * grid_w + col``) of the True patches, ascending."""
    coverage: np.ndarray
    """``[grid_h, grid_w]`` float in [0, 1]: the fraction of each patch's area inside the box."""
    box: tuple[float, float, float, float] | None
    """The visible box in model-input pixels ``(x0, y0, x1, y1)``, None when cropped away."""
    problem: str | None = None
    """Why the mask is empty (box cropped away), else None."""


def box_to_patches(
    box_xywh: Sequence[float],
    image_size: tuple[int, int],
    preprocess: Preprocess,
    *,
    min_overlap: float = 0.5,
) -> PatchMask:
    """Patches of ``preprocess``'s grid covered by a COCO box given in original pixels.

    ``box_xywh``: ``(x, y, w, h)`` in original pixels; ``image_size``: original ``(width,
    height)``. A patch is inside when the fraction of its area inside the (visible) box is at
    least ``min_overlap`` (0 < min_overlap <= 1); the patch holding the centre of the visible box
    is always inside. A box entirely cropped away (or empty) gives an all-False mask, no indices
    and a ``problem`` line; it never raises for that.
    """
    if not 0.0 < min_overlap <= 1.0:
        raise InputError(f"min_overlap {min_overlap}: must be in (0, 1]")
    width, height = image_size
    x, y, w, h = (float(v) for v in box_xywh)
    # only the part inside the original image is visible (padding never holds the object)
    ox0, oy0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    ox1, oy1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    mapped = preprocess.map_xyxy((ox0, oy0, ox1, oy1), width, height)
    in_w, in_h = preprocess.input_size(width, height)
    p = preprocess.patch_size
    pm = grid_mask(mapped, in_h // p, in_w // p, p, min_overlap=min_overlap)
    if pm.problem:
        shown = [round(float(v), 1) for v in box_xywh]
        return dataclasses.replace(pm, problem=f"box {shown} is outside the model input after preprocessing "
                                                f"({preprocess.mode}, {in_w}x{in_h})")
    return pm


def grid_mask(mapped_xyxy: Sequence[float], grid_h: int, grid_w: int, cell: float, *, min_overlap: float = 0.5) -> PatchMask:
    """The cells of a ``grid_h x grid_w`` grid of ``cell`` px cells covered by a box already mapped
    to the grid's pixels (``(x0, y0, x1, y1)``, cell ``(r, c)`` covering ``[c * cell, (c + 1) * cell)
    x [r * cell, (r + 1) * cell)``), with the edge rule of the module docstring. The box is clipped
    to the grid; a box with nothing left gives an empty mask and a ``problem`` line."""
    if not 0.0 < min_overlap <= 1.0:
        raise InputError(f"min_overlap {min_overlap}: must be in (0, 1]")
    p = float(cell)
    gx, gy = grid_w * p, grid_h * p  # the area the grid covers
    x0, y0 = max(mapped_xyxy[0], 0.0), max(mapped_xyxy[1], 0.0)
    x1, y1 = min(mapped_xyxy[2], gx), min(mapped_xyxy[3], gy)
    mask = np.zeros((grid_h, grid_w), dtype=bool)
    if not (x1 > x0 and y1 > y0):
        return PatchMask(mask, np.zeros(0, dtype=np.int64), np.zeros((grid_h, grid_w)), None,
                         f"box is outside the {grid_w}x{grid_h} grid")
    edges_x = np.arange(grid_w + 1, dtype=np.float64) * p
    edges_y = np.arange(grid_h + 1, dtype=np.float64) * p
    ox = np.clip(np.minimum(edges_x[1:], x1) - np.maximum(edges_x[:-1], x0), 0, None)  # [grid_w]
    oy = np.clip(np.minimum(edges_y[1:], y1) - np.maximum(edges_y[:-1], y0), 0, None)  # [grid_h]
    frac = np.outer(oy, ox) / (p * p)  # [grid_h, grid_w]
    mask = frac >= min_overlap - 1e-9
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    mask[min(int(math.floor(cy / p)), grid_h - 1), min(int(math.floor(cx / p)), grid_w - 1)] = True
    indices = np.flatnonzero(mask.reshape(-1)).astype(np.int64)
    return PatchMask(mask, indices, frac, (x0, y0, x1, y1))


def _as_dict(value: Any) -> dict:
    """A processor ``size``/``crop_size`` (dict, SizeDict, int) as a plain dict without Nones."""
    if value is None:
        return {}
    if isinstance(value, int):
        return {"height": value, "width": value}
    if isinstance(value, Mapping):
        items = dict(value)
    elif hasattr(value, "__dataclass_fields__"):
        items = {k: getattr(value, k) for k in value.__dataclass_fields__}
    else:
        items = dict(value)
    return {k: v for k, v in items.items() if v is not None}
