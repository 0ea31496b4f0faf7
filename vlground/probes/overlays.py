"""An image example for the report: the photo the model saw, the object's box, and the per-patch
saliency of the strongest box aggregate heads into the position before the object's name, for a
match item and its mismatched image side by side.

The grid is the item's first view (``base`` when there is one) of the adapter's image layout
(``image_layout``: any ``rows x cols`` grid, whatever the pixel layout); the image is that view's
model-input pixels: ``pixel_values`` rescaled per channel when they are the view's ``[3, H, W]``,
else the view's brightness from ``view_pixels`` (Qwen2-VL's flattened patches, stitched crops),
so the grid lines up with the patches exactly (no guessing of crops or padding). Adapters without
an image layout give no example.
"""
from __future__ import annotations

import numpy as np

from vlground.lazy import torch

#: heads summed in the overlay (the strongest by mean inside-box share)
N_HEADS = 3


def _rgb(x: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` model-input pixels rescaled per channel -> ``[H, W, 3]`` uint8."""
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _side(ctx, batch, rows: torch.Tensor, b: int, heads: list[tuple[int, int]]):
    """``(patches [r, c], mask [r, c], image [H, W, 3] uint8)`` of item ``b``'s first view (``base`` if
    there is one), from the adapter's image layout; None when the adapter gives no layout."""
    adapter, loaded, it = ctx.adapter, ctx.loaded, batch.items[b]
    obj = it.meta.get("object")
    if obj is None or not (hasattr(adapter, "image_layout") and hasattr(adapter, "view_pixels")):
        return None
    enc = adapter.encode(loaded, obj.image if it.condition == "match" else obj.mismatch_image)
    layout = adapter.image_layout(loaded, enc, obj.image_size)
    g = next((g for g in layout.grids if g.name == "base"), layout.grids[0])
    if g.rows < 2 or g.cols < 2:
        return None
    idx = torch.as_tensor(g.positions, dtype=torch.long)
    vals = sum(rows[b, k, h][idx].abs().float() for k, h in heads).reshape(g.rows, g.cols)
    mask = batch.env_mask[b][idx.to(batch.env_mask.device)].reshape(g.rows, g.cols)
    bright = np.asarray(adapter.view_pixels(loaded, enc, layout)[g.name])
    H, W = min(bright.shape[0], int(round(g.rows * g.cell))), min(bright.shape[1], int(round(g.cols * g.cell)))
    img = None
    pix = enc.get("pixel_values")
    if pix is not None and pix.dim() >= 3:  # [views, 3, H, W] or [3, H, W]: colour when it is this view's pixels
        x = pix[0].float()
        while x.dim() > 3:
            x = x[0]
        if x.shape[0] == 3 and tuple(x.shape[1:]) == bright.shape:
            img = _rgb(x)[:H, :W]
    if img is None:  # flattened patches (Qwen2-VL), crops stitched by the adapter: the view's brightness
        grey = (np.clip(bright[:H, :W], 0, 1) * 255).round().astype(np.uint8)
        img = np.repeat(grey[..., None], 3, axis=-1)
    return vals.cpu().numpy().astype(np.float32), mask.cpu().numpy(), img


def overlay_example(ctx, parts, share: torch.Tensor, site) -> tuple[dict, dict]:
    """``(record fields, arrays)`` for the report's overlay; both empty when there is no example.

    ``parts``: the box probe's ``[(batch, rows [B, L, H, S], norms)]``; ``share`` ``[N, L, H]``.
    """
    if not parts or share.numel() == 0:
        return {}, {}
    mean = share.mean(0)  # [L, H]
    flat = torch.topk(mean.flatten(), min(N_HEADS, mean.numel())).indices.tolist()
    heads = [divmod(i, mean.shape[1]) for i in flat]
    batch, rows, _ = parts[0]
    item = batch.items[0]
    match = _side(ctx, batch, rows, 0, heads)
    if match is None:
        return {}, {}
    arrays = {"overlay_match": match[0], "overlay_match_mask": match[1], "overlay_match_image": match[2]}
    twin = next((it for it in ctx.items if it.pair_id == item.pair_id and it.condition == "mismatch"
                 and it.direction == item.direction), None)
    if twin is not None:
        mb = ctx.adapter.batch(ctx.loaded, [twin])
        mm = _side(ctx, mb, ctx.adapter.saliency(ctx.loaded, mb), 0, heads)
        if mm is not None:
            arrays.update({"overlay_mismatch": mm[0], "overlay_mismatch_mask": mm[1], "overlay_mismatch_image": mm[2]})
    from vlground.numbering import head_label

    names = ", ".join(head_label(site.layers[k], h) for k, h in heads)
    return {"overlay_word": item.word, "overlay_heads": names}, arrays
