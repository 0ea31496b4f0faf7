"""An image example for the report: the photo the model saw, the object's box, and the per-patch
saliency of the strongest box aggregate heads into the position before the object's name, for a
match item and its mismatched image side by side.

Only single-grid image layouts are drawn (``n`` image tokens of the base view forming a square
``sqrt(n) x sqrt(n)`` grid over the processed image, as in LLaVA-1.5 and ViT-style encoders);
other layouts give no example. The image is the model's own ``pixel_values`` rescaled per channel
for display, so the grid lines up with the patches exactly (no guessing of crops or padding).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: heads summed in the overlay (the strongest by mean inside-box share)
N_HEADS = 3


def _side(batch, rows: torch.Tensor, b: int, heads: list[tuple[int, int]]):
    """``(patches [g, g], mask [g, g], image [H, W, 3] uint8)`` or None for a layout that is not one square grid."""
    span = batch.env_span[b]
    base = batch.env_views.get("base")
    pos = (span & base[b]) if base is not None else span
    idx = pos.nonzero()[:, 0]
    g = math.isqrt(int(idx.numel()))
    pix = batch.model_inputs.get("pixel_values")
    if g < 2 or g * g != idx.numel() or pix is None:
        return None
    vals = sum(rows[b, k, h][idx].abs().float() for k, h in heads).reshape(g, g)
    mask = batch.env_mask[b][idx].reshape(g, g)
    img = pix[b].float()
    while img.dim() > 3:  # [views, 3, H, W] -> the base view
        img = img[0]
    lo = img.amin(dim=(1, 2), keepdim=True)
    hi = img.amax(dim=(1, 2), keepdim=True)
    img = ((img - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8).permute(1, 2, 0)
    return vals.cpu().numpy().astype(np.float32), mask.cpu().numpy(), img.cpu().numpy()


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
    match = _side(batch, rows, 0, heads)
    if match is None:
        return {}, {}
    arrays = {"overlay_match": match[0], "overlay_match_mask": match[1], "overlay_match_image": match[2]}
    twin = next((it for it in ctx.items if it.pair_id == item.pair_id and it.condition == "mismatch"
                 and it.direction == item.direction), None)
    if twin is not None:
        mb = ctx.adapter.batch(ctx.loaded, [twin])
        mm = _side(mb, ctx.adapter.saliency(ctx.loaded, mb), 0, heads)
        if mm is not None:
            arrays.update({"overlay_mismatch": mm[0], "overlay_mismatch_mask": mm[1], "overlay_mismatch_image": mm[2]})
    from vlground.numbering import head_label

    names = ", ".join(head_label(site.layers[k], h) for k, h in heads)
    return {"overlay_word": item.word, "overlay_heads": names}, arrays
