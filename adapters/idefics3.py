"""``idefics3``: Idefics3 and SmolVLM (``HuggingFaceTB/SmolVLM-Instruct`` by default) through the HF VLM adapter.

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Tiles, then a global view.** The image processor resizes the longest edge to ``size`` (4 x 364
  px for Idefics3, 4 x 384 for SmolVLM), then each side *up* to a whole number of tiles of
  ``max_image_size`` (so the aspect ratio changes a little), and cuts ``rows x cols`` tiles,
  row-major; the whole image resized to one tile comes **after** them (an image no larger than one
  tile is only that view). Each tile's patches are pixel-shuffled (``scale_factor`` 2, SmolVLM 3)
  into ``s x s`` tokens, row-major, and the tokens come **tile by tile**. :meth:`image_layout` builds
  the ``tiles`` grid (``rows*s x cols*s``, stitched, its positions read tile by tile) and the
  ``global`` grid from the processor's own ``get_number_of_image_patches`` (the processor's output
  drops the row/column counts).
* The ``<fake_token_around_image>``, ``<row_r_col_c>`` and ``<global-img>`` markers are text tokens
  (not image tokens); ``pixel_attention_mask`` is a per-image input (zero-padded like the pixels).
* SmolVLM's processor needs its video processor's dependencies (torchvision); where they are
  missing the checkpoint cannot be loaded here.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter
from vlground.errors import InputError


class Idefics3Adapter(HFVisionLanguageAdapter):
    name = "idefics3"
    model_types = ("idefics3", "smolvlm")
    model_class = "AutoModelForImageTextToText"
    chat_format = "User:{image}{question}<end_of_utterance>\nAssistant: {answer}"
    description = "Idefics3 / SmolVLM checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "HuggingFaceTB/SmolVLM-Instruct"  #: hub id or local folder of an Idefics3 or SmolVLM checkpoint

    def _tiles(self, loaded, image_size):
        """``(tile px, tokens per tile side, rows, cols)``; rows = cols = 0 when the image is one view."""
        proc = loaded.extra["processor"]
        ip = proc.image_processor
        w, h = image_size
        _, rows, cols = ip.get_number_of_image_patches(h, w, {"do_image_splitting": getattr(ip, "do_image_splitting", True)})
        side = int(round(proc.image_seq_len ** 0.5))
        return int(ip.max_image_size["longest_edge"]), side, int(rows), int(cols)

    def image_layout(self, loaded, enc, image_size):
        from vlground.vision.layout import ImageTokenLayout, TokenGrid

        M, s, rows, cols = self._tiles(loaded, image_size)
        w, h = image_size
        pos = self.image_positions(loaded, enc["input_ids"][0]).tolist()
        n_tiles = rows * cols
        if len(pos) != (n_tiles + 1) * s * s:
            raise InputError(f"{loaded.checkpoint.path}: {len(pos)} image tokens, expected {n_tiles} tiles + 1 global view "
                             f"of {s}x{s}")
        cell = M / s
        glob = TokenGrid("global" if n_tiles else "image", s, s, cell, (M / w, M / h, 0.0, 0.0), tuple(pos[n_tiles * s * s:]))
        if not n_tiles:
            return ImageTokenLayout((w, h), (glob,))
        stitched = tuple(pos[((r // s) * cols + c // s) * s * s + (r % s) * s + c % s]  # tile by tile, row-major inside
                         for r in range(rows * s) for c in range(cols * s))
        tiles = TokenGrid("tiles", rows * s, cols * s, cell, (cols * M / w, rows * M / h, 0.0, 0.0), stitched, crops=n_tiles)
        return ImageTokenLayout((w, h), (tiles, glob))

    def view_pixels(self, loaded, enc, layout):
        import numpy as np

        from vlground.vision.layout import brightness

        proc = loaded.extra["processor"].image_processor
        x = enc["pixel_values"][0].float().numpy()  # [tiles + 1, 3, M, M]
        out = {layout.grids[-1].name: brightness(x[-1], proc)}  # the global view is last (or the only one)
        if len(layout.grids) == 2:
            _, _, rows, cols = self._tiles(loaded, layout.image_size)
            canvas = np.concatenate([np.concatenate(list(x[r * cols:(r + 1) * cols]), axis=2) for r in range(rows)], axis=1)
            out["tiles"] = brightness(canvas, proc)
        return out
