"""Image-token layout as data: where one image's tokens sit in the sequence, and what each shows.

A VLM turns one image into image tokens in the language model's sequence. How many, and which
part of the image each one shows, depends on the image (Qwen2-VL resizes every image to its own
grid; LLaVA-NeXT adds any-resolution crops to a low-resolution base view). An
:class:`ImageTokenLayout` describes one image, computed by the adapter from the real processor
outputs (``image_grid_thw``, ``image_sizes``, the crop list):

* ``grids``: one :class:`TokenGrid` per view (LLaVA-1.5: one ``image`` grid; LLaVA-NeXT: the
  ``base`` view and the stitched ``tiles``). A grid has ``rows x cols`` tokens, token ``(r, c)``
  at sequence position ``positions[r * cols + c]``; it shows the view-pixel square
  ``[c * cell, (c + 1) * cell) x [r * cell, (r + 1) * cell)``, ``cell = patch_size * merge``
  (``merge`` patches merged into one token along each side; Qwen2-VL: 2). ``to_view`` maps
  original-image pixels to the grid's pixels (an axis-aligned affine map: resize, pad, crop).
* ``prefix``: positions of image tokens that show no region (CLS, registers);
  ``separators``: positions of image tokens between rows (LLaVA-NeXT's row-end newline).

A box maps to tokens with :func:`box_to_tokens`: clipped to the image, mapped into every grid,
and the cells covered by at least ``min_overlap`` of their area (plus the cell holding the centre of
the visible box) count, per grid, through :func:`vlground.vision.geometry.grid_mask`, the one
implementation of the edge rule. A box counts in every view that shows it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlground.vision.geometry import PatchMask, Preprocess, grid_mask


@dataclass(frozen=True)
class TokenGrid:
    """One view of the image as a grid of language-model tokens."""

    name: str  #: ``image`` (the only view), ``base`` (whole image, low resolution), ``tiles`` (any-res crops)
    rows: int  #: token rows
    cols: int  #: token columns
    cell: float  #: side of one token's square in view pixels (patch size x merge)
    to_view: tuple[float, float, float, float]  #: ``(sx, sy, tx, ty)``: original ``(x, y)`` -> ``(x*sx+tx, y*sy+ty)``
    positions: tuple[int, ...]  #: sequence position of token ``(r, c)`` at index ``r * cols + c``
    merge: int = 1  #: patches merged into one token along each side
    crops: int = 1  #: processor crops this grid is stitched from

    def __post_init__(self) -> None:
        if len(self.positions) != self.rows * self.cols:
            raise ValueError(f"grid {self.name}: {len(self.positions)} positions for {self.rows}x{self.cols} tokens")

    def map_xyxy(self, xyxy: Sequence[float]) -> tuple[float, float, float, float]:
        sx, sy, tx, ty = self.to_view
        return (xyxy[0] * sx + tx, xyxy[1] * sy + ty, xyxy[2] * sx + tx, xyxy[3] * sy + ty)


@dataclass(frozen=True)
class ImageTokenLayout:
    """The tokens of one image (see the module docstring)."""

    image_size: tuple[int, int]  #: original ``(width, height)``
    grids: tuple[TokenGrid, ...]  #: the views, in sequence order
    prefix: tuple[int, ...] = ()  #: positions of CLS / register tokens
    separators: tuple[int, ...] = ()  #: positions of row-separator tokens

    @property
    def positions(self) -> np.ndarray:
        """long ``[n]``: every image-token position (grids, prefix, separators), ascending."""
        allpos = [p for g in self.grids for p in g.positions] + list(self.prefix) + list(self.separators)
        return np.unique(np.asarray(allpos, dtype=np.int64))

    @property
    def n_tokens(self) -> int:
        return int(self.positions.size)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record: the views and their grids, token counts (results and items tables)."""
        return {"grids": [{"name": g.name, "rows": g.rows, "cols": g.cols, "merge": g.merge, "crops": g.crops}
                          for g in self.grids],
                "n_image_tokens": self.n_tokens, "n_prefix": len(self.prefix), "n_separators": len(self.separators)}

    def grid_of(self) -> dict[int, str]:
        """position -> the name of the view it shows (prefix and separators map to ``prefix`` / ``separator``)."""
        out = {int(p): g.name for g in self.grids for p in g.positions}
        out.update({int(p): "prefix" for p in self.prefix})
        out.update({int(p): "separator" for p in self.separators})
        return out


@dataclass(frozen=True)
class BoxTokens:
    """The tokens of one layout a box covers."""

    positions: np.ndarray  #: long ``[n]``: sequence positions inside the box (union over views), ascending
    masks: Mapping[str, PatchMask]  #: per view, the cells inside (``PatchMask.indices`` are ``r * cols + c``)
    problem: str | None = None  #: why no token is inside (box empty or outside every view), else None


def clip_box(box_xywh: Sequence[float], image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """COCO ``(x, y, w, h)`` -> ``(x0, y0, x1, y1)`` clipped to the image (padding never holds the object)."""
    width, height = image_size
    x, y, w, h = (float(v) for v in box_xywh)
    return (min(max(x, 0.0), width), min(max(y, 0.0), height),
            min(max(x + w, 0.0), width), min(max(y + h, 0.0), height))


def box_to_tokens(layout: ImageTokenLayout, box_xywh: Sequence[float], *, min_overlap: float = 0.5) -> BoxTokens:
    """Sequence positions of the image tokens covered by a COCO box in original pixels (every view)."""
    visible = clip_box(box_xywh, layout.image_size)
    masks: dict[str, PatchMask] = {}
    inside: list[int] = []
    for g in layout.grids:
        pm = grid_mask(g.map_xyxy(visible), g.rows, g.cols, g.cell, min_overlap=min_overlap)
        masks[g.name] = pm
        inside.extend(g.positions[i] for i in pm.indices)
    problem = None
    if not inside:
        shown = [round(float(v), 1) for v in box_xywh]
        w, h = layout.image_size
        problem = f"box {shown} of a {w}x{h} image is outside the model input after preprocessing"
    return BoxTokens(np.unique(np.asarray(inside, dtype=np.int64)), masks, problem)


def single_grid_layout(pre: Preprocess, image_size: tuple[int, int], image_positions: Sequence[int],
                       merge: int = 1) -> ImageTokenLayout:
    """One grid described by a :class:`Preprocess` (LLaVA-1.5, DINOv2): the grid's tokens are the last
    ``rows x cols`` of ``image_positions`` (row-major); those before them are prefix tokens (a kept CLS)."""
    w, h = image_size
    rows, cols = pre.grid(w, h)
    rows, cols = rows // merge, cols // merge
    pos = [int(p) for p in image_positions]
    n_prefix = len(pos) - rows * cols
    if n_prefix < 0:
        raise ValueError(f"{len(pos)} image tokens for a {rows}x{cols} grid")
    grid = TokenGrid("image", rows, cols, pre.patch_size * merge, pre.affine(w, h), tuple(pos[n_prefix:]), merge)
    return ImageTokenLayout((w, h), (grid,), prefix=tuple(pos[:n_prefix]))


def brightness(pixels: np.ndarray, image_processor: Any) -> np.ndarray:
    """``[C, H, W]`` normalised model-input pixels -> ``[H, W]`` in [0, 1] (mean over channels of the
    image before normalisation): undoes the processor's ``image_mean`` / ``image_std``."""
    x = np.asarray(pixels, dtype=np.float64)
    if getattr(image_processor, "do_normalize", True):
        mean = np.asarray(getattr(image_processor, "image_mean", None) or [0.0] * x.shape[0])[:, None, None]
        std = np.asarray(getattr(image_processor, "image_std", None) or [1.0] * x.shape[0])[:, None, None]
        x = x * std + mean
    return np.clip(x.mean(0), 0.0, 1.0)


def token_brightness(grid: TokenGrid, view: np.ndarray) -> np.ndarray:
    """``[rows * cols]``: the mean of ``view`` (``[H, W]`` in the grid's pixels) over each token's cell."""
    c = int(round(grid.cell))
    block = view[: grid.rows * c, : grid.cols * c]
    if block.shape != (grid.rows * c, grid.cols * c):
        raise ValueError(f"grid {grid.name}: view of {view.shape} pixels is smaller than {grid.rows}x{grid.cols} cells of {c}")
    return block.reshape(grid.rows, c, grid.cols, c).mean(axis=(1, 3)).reshape(-1)


def tiled_layout(image_size: tuple[int, int], positions: Sequence[int], tile: float, side: int, rows: int,
                 cols: int) -> ImageTokenLayout:
    """Tiles then a global view (Idefics3 / SmolVLM, InternVL): the image resized to ``cols x rows`` tiles of
    ``tile`` px (aspect ratio not kept) and cut row-major, each tile ``side x side`` tokens (row-major) with the
    tokens **tile by tile**, then the whole image resized to one tile (``global``). With ``rows * cols <= 1``
    only that one view (``image``). Returns the ``tiles`` grid stitched over the canvas, then ``global``."""
    w, h = image_size
    pos = [int(p) for p in positions]
    n = rows * cols if rows * cols > 1 else 0
    if len(pos) != (n + 1) * side * side:
        raise ValueError(f"{len(pos)} image tokens for {n} tiles + 1 view of {side}x{side}")
    cell = tile / side
    glob = TokenGrid("global" if n else "image", side, side, cell, (tile / w, tile / h, 0.0, 0.0), tuple(pos[n * side * side:]))
    if not n:
        return ImageTokenLayout((w, h), (glob,))
    stitched = tuple(pos[((r // side) * cols + c // side) * side * side + (r % side) * side + c % side]
                     for r in range(rows * side) for c in range(cols * side))
    tiles = TokenGrid("tiles", rows * side, cols * side, cell, (cols * tile / w, rows * tile / h, 0.0, 0.0), stitched, crops=n)
    return ImageTokenLayout((w, h), (tiles, glob))


def tiled_view_pixels(pixels: np.ndarray, layout: ImageTokenLayout, image_processor: Any) -> dict[str, np.ndarray]:
    """``pixels [tiles (+ 1), C, T, T]`` of a :func:`tiled_layout` -> brightness per view (the tiles stitched row-major)."""
    x = np.asarray(pixels, dtype=np.float64)
    out = {layout.grids[-1].name: brightness(x[-1], image_processor)}  # the global view is last (or the only one)
    if len(layout.grids) == 2:
        g = layout.grids[0]
        side = layout.grids[1].rows
        rows, cols = g.rows // side, g.cols // side
        canvas = np.concatenate([np.concatenate(list(x[r * cols:(r + 1) * cols]), axis=2) for r in range(rows)], axis=1)
        out["tiles"] = brightness(canvas, image_processor)
    return out
