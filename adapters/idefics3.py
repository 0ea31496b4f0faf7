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
        from vlground.vision.layout import tiled_layout

        M, s, rows, cols = self._tiles(loaded, image_size)
        return tiled_layout(image_size, self.image_positions(loaded, enc["input_ids"][0]).tolist(), M, s, rows, cols)

    def view_pixels(self, loaded, enc, layout):
        from vlground.vision.layout import tiled_view_pixels

        return tiled_view_pixels(enc["pixel_values"][0].float().numpy(), layout, loaded.extra["processor"].image_processor)
