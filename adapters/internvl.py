"""``internvl``: InternVL 3, transformers-native (``OpenGVLab/InternVL3-1B-hf`` by default), through the HF VLM adapter.

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Tiles, then a thumbnail.** With ``crop_to_patches`` the image processor resizes the image to the
  tile canvas (``cols x rows`` tiles of 448 px, at most ``max_patches``) whose aspect ratio is closest
  to the image's (so the aspect ratio changes a little), cuts it row-major and adds the whole image
  at one tile (the thumbnail) **after** the tiles (none for a one-tile canvas). Each tile's
  32x32 patches are pixel-shuffled (``downsample_ratio`` 0.5) into 16x16 = 256 tokens, row-major, and
  the tokens come tile by tile between ``<img>`` and ``</img>``: the layout of Idefics3
  (:func:`vlground.vision.layout.tiled_layout`), the canvas read from the processor's own
  ``get_optimal_tiled_canvas``.
* ``pixel_values`` is ``[tiles (+ 1), 3, 448, 448]`` per image, concatenated over images.
* **Processor without torchvision.** ``InternVLProcessor`` cannot be built without torchvision (its
  video part); :meth:`load_processor` builds an :class:`~vlground.adapters.hf_vlm.ImageTextProcessor`
  from ``GotOcr2ImageProcessorPil`` and the tokenizer (``<IMG_CONTEXT>`` x ``image_seq_length`` x
  tiles, between ``<img>`` and ``</img>`` in the chat format), as InternVLProcessor does.
* Remote-code InternVL checkpoints (``OpenGVLab/InternVL3-1B`` without ``-hf``) are not this model
  class; they need ``--trust-remote-code`` and another adapter.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter


class InternVLAdapter(HFVisionLanguageAdapter):
    name = "internvl"
    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    chat_format = "<|im_start|>user\n<img>{image}</img>\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}"
    description = "InternVL 3 (transformers-native) checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "OpenGVLab/InternVL3-1B-hf"  #: hub id or local folder of a transformers-native InternVL checkpoint

    def load_processor(self, path: str):
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        from vlground.adapters.hf_vlm import ImageTextProcessor

        hub = self.hub_kwargs()
        seq = int(AutoConfig.from_pretrained(path, **hub).image_seq_length)
        proc = ImageTextProcessor(GotOcr2ImageProcessorPil.from_pretrained(path, **hub), AutoTokenizer.from_pretrained(path, **hub),
                                  "<IMG_CONTEXT>", lambda out, i: int(out["num_patches"][i]) * seq)
        proc.image_seq_length = seq
        return proc

    def process(self, loaded, image, prompt):
        enc = dict(super().process(loaded, image, prompt))
        enc.pop("num_patches", None)  # the processor's bookkeeping, not a model input
        return enc

    def image_layout(self, loaded, enc, image_size):
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

        from vlground.vision.layout import tiled_layout

        proc = loaded.extra["processor"]
        ip = proc.image_processor
        T = int(ip.size["height"] if isinstance(ip.size, dict) else ip.size.height)
        cols = rows = 1
        if getattr(ip, "crop_to_patches", False) and ip.max_patches > 1:
            cols, rows = get_optimal_tiled_canvas((image_size[1], image_size[0]), (T, T), ip.min_patches, ip.max_patches)
        side = int(round(proc.image_seq_length ** 0.5))
        return tiled_layout(image_size, self.image_positions(loaded, enc["input_ids"][0]).tolist(), T, side, rows, cols)

    def view_pixels(self, loaded, enc, layout):
        from vlground.vision.layout import tiled_view_pixels

        return tiled_view_pixels(enc["pixel_values"].float().numpy(), layout, loaded.extra["processor"].image_processor)
