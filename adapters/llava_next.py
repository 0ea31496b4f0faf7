"""``llava_next``: LLaVA-NeXT / LLaVA-1.6 any-resolution models (``llava-hf/llava-v1.6-mistral-7b-hf``).

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Two views per image.** The processor gives ``pixel_values [1, 1 + crops, 3, S, S]``: a ``base``
  view (the whole image resized to ``S x S``, ignoring its aspect ratio) and the crops of the
  image resized into the best ``image_grid_pinpoints`` canvas (aspect kept, centred, zero-padded),
  ``S`` px each, row-major. The model puts the base view's ``(S/p)^2`` tokens first, then the
  crops' features stitched into one grid, with the rows (or columns) that show only padding removed
  (``unpad_image``: computed from the original size, in feature cells) and a newline token after
  each row. :meth:`image_layout` rebuilds both grids from ``image_sizes`` and the pinpoints with
  transformers' own ``select_best_resolution``; newline tokens are ``separators``.
* A box counts in every view that shows it (the base view and the ``tiles`` grid);
  ``boxheads`` reports how saliency splits between them (``view_share``).
* Batches zero-pad ``pixel_values`` to the most crops (as the processor does for several images);
  the model keeps each image's own crops by ``image_sizes``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter
from vlground.errors import InputError


class LlavaNextAdapter(HFVisionLanguageAdapter):
    name = "llava_next"
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    processor_class = "AutoProcessor"
    chat_format = "USER: {image}\n{question} ASSISTANT: {answer}"
    description = "LLaVA-NeXT checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "llava-hf/llava-v1.6-mistral-7b-hf"  #: hub id or local folder of a LLaVA-NeXT checkpoint

    def _geometry(self, loaded, image_size):
        """crop side S, patch p, canvas (bh, bw), resized (nh, nw), paste (px, py), feature unpad (rows, cols)."""
        from transformers.image_processing_utils import select_best_resolution

        cfg = loaded.model.config
        S, p = cfg.vision_config.image_size, cfg.vision_config.patch_size
        w, h = image_size
        bh, bw = select_best_resolution((h, w), cfg.image_grid_pinpoints)
        sw, sh = bw / w, bh / h
        nw, nh = (bw, min(math.ceil(h * sw), bh)) if sw < sh else (min(math.ceil(w * sh), bw), bh)
        px, py = (bw - nw) // 2, (bh - nh) // 2
        ch, cw = (bh // S) * (S // p), (bw // S) * (S // p)  # feature cells of the stitched crops
        pad_r = pad_c = 0
        if w / h > cw / ch:
            pad_r = (ch - int(round(h * (cw / w), 7))) // 2
        else:
            pad_c = (cw - int(round(w * (ch / h), 7))) // 2
        return S, p, (bh, bw), (nh, nw), (px, py), (pad_r, pad_c)

    def image_layout(self, loaded, enc, image_size):
        from vlground.vision.layout import ImageTokenLayout, TokenGrid

        S, p, (bh, bw), (nh, nw), (px, py), (pad_r, pad_c) = self._geometry(loaded, image_size)
        w, h = image_size
        pos = self.image_positions(loaded, enc["input_ids"][0]).tolist()
        g = S // p
        rows, cols = (bh // S) * g - 2 * pad_r, (bw // S) * g - 2 * pad_c
        if len(pos) != g * g + rows * (cols + 1):
            raise InputError(f"{loaded.checkpoint.path}: {len(pos)} image tokens, expected {g * g} (base) + "
                             f"{rows}x({cols}+1) (tiles and newlines)")
        base = TokenGrid("base", g, g, p, (S / w, S / h, 0.0, 0.0), tuple(pos[: g * g]))
        tiled = [pos[g * g + r * (cols + 1): g * g + (r + 1) * (cols + 1)] for r in range(rows)]
        tiles = TokenGrid("tiles", rows, cols, p, (nw / w, nh / h, px - pad_c * p, py - pad_r * p),
                          tuple(q for row in tiled for q in row[:cols]), crops=(bh // S) * (bw // S))
        return ImageTokenLayout((w, h), (base, tiles), separators=tuple(row[cols] for row in tiled))

    def view_pixels(self, loaded, enc, layout):
        import numpy as np

        from vlground.vision.layout import brightness

        S, p, (bh, bw), _, _, (pad_r, pad_c) = self._geometry(loaded, layout.image_size)
        proc = loaded.extra["processor"].image_processor
        x = enc["pixel_values"][0].float().numpy()  # [1 + crops (+ padding), 3, S, S]
        nr, nc = bh // S, bw // S
        canvas = np.concatenate([np.concatenate(list(x[1 + r * nc: 1 + (r + 1) * nc]), axis=2) for r in range(nr)], axis=1)
        return {"base": brightness(x[0], proc), "tiles": brightness(canvas, proc)[pad_r * p:, pad_c * p:]}
