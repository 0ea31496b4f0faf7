"""``qwen2vl``: Qwen2-VL and Qwen2.5-VL (``Qwen/Qwen2-VL-7B-Instruct`` by default) through the HF VLM adapter.

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Dynamic resolution.** The image processor resizes each image with ``smart_resize`` to multiples
  of ``patch_size * merge_size`` (28 px) within ``[min_pixels, max_pixels]`` and merges 2x2
  patches into one token: the processor's ``image_grid_thw`` row ``(1, gh, gw)`` gives a grid of
  ``gh/2 x gw/2`` tokens, each a 28 px square of the ``14*gw x 14*gh`` px resized image (600x400
  -> 336x224, 8x12 tokens). :meth:`image_layout` reads that grid; no crop, no padding.
* **M-RoPE.** The language model's rotary positions are 3-D (time, row, column for image tokens),
  computed from ``input_ids``, ``mm_token_type_ids`` and ``image_grid_thw``
  (``model.get_rope_index``). :meth:`model_inputs` computes ``position_ids`` once per batch and
  passes them on every path (scoring, saliency with ``inputs_embeds``, ablation), so no pass runs
  with other positions. ``mm_token_type_ids`` is a per-token input (padded with 0 = text).
* **Processor without torchvision.** ``Qwen2VLProcessor`` cannot be built without torchvision
  (its video part); :meth:`load_processor` builds an
  :class:`~vlground.adapters.hf_vlm.ImageTextProcessor` from ``Qwen2VLImageProcessorPil`` and the
  tokenizer (``grid_thw.prod() / merge_size**2`` image tokens per image, as Qwen2VLProcessor does).
* ``--min-pixels`` / ``--max-pixels`` set the number of image tokens (defaults: the checkpoint's).
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter, ImageTextProcessor


class Qwen2VLAdapter(HFVisionLanguageAdapter):
    name = "qwen2vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    model_class = "AutoModelForImageTextToText"
    chat_format = ("<|im_start|>user\n<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n"
                   "<|im_start|>assistant\n{answer}")
    token_inputs = {"mm_token_type_ids": 0}
    description = "Qwen2-VL checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "Qwen/Qwen2-VL-7B-Instruct"  #: hub id or local folder of a Qwen2(.5)-VL checkpoint
        min_pixels: int | None = None  #: fewest pixels of a resized image (default: the checkpoint's)
        max_pixels: int | None = None  #: most pixels of a resized image; sets the number of image tokens

    def load_processor(self, path: str):
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        sizes = {k: v for k, v in (("min_pixels", self.options.min_pixels), ("max_pixels", self.options.max_pixels)) if v}
        hub = self.hub_kwargs()  # --revision / --trust-remote-code, as for the model
        images = Qwen2VLImageProcessorPil.from_pretrained(path, **sizes, **hub)
        merge = images.merge_size ** 2
        return ImageTextProcessor(images, AutoTokenizer.from_pretrained(path, **hub), "<|image_pad|>",
                                  lambda out, i: int(out["image_grid_thw"][i].prod()) // merge, token_types=True)

    def image_layout(self, loaded, enc, image_size):
        from vlground.vision.layout import ImageTokenLayout, TokenGrid

        proc = loaded.extra["processor"].image_processor
        _, gh, gw = (int(v) for v in enc["image_grid_thw"][0])
        m, p = proc.merge_size, proc.patch_size
        w, h = image_size
        positions = tuple(self.image_positions(loaded, enc["input_ids"][0]).tolist())
        grid = TokenGrid("image", gh // m, gw // m, p * m, (gw * p / w, gh * p / h, 0.0, 0.0), positions, merge=m)
        return ImageTokenLayout((w, h), (grid,))

    def view_pixels(self, loaded, enc, layout):
        from vlground.vision.layout import brightness

        proc = loaded.extra["processor"].image_processor
        _, gh, gw = (int(v) for v in enc["image_grid_thw"][0])
        m, p, t = proc.merge_size, proc.patch_size, proc.temporal_patch_size
        # invert the processor's patchify: rows ordered (gh/m, gw/m, m, m), each (C, T, P, P)
        x = enc["pixel_values"].float().numpy().reshape(gh // m, gw // m, m, m, -1, t, p, p)[..., 0, :, :]
        x = x.transpose(4, 0, 2, 5, 1, 3, 6).reshape(-1, gh * p, gw * p)
        return {"image": brightness(x, proc)}

    def model_inputs(self, loaded, batch):
        inputs = super().model_inputs(loaded, batch)
        if "position_ids" not in inputs:  # M-RoPE positions, the same on every path
            inputs["position_ids"], _ = loaded.model.model.get_rope_index(
                inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs.get("image_grid_thw"),
                attention_mask=inputs.get("attention_mask"))
        return inputs


__all__ = ["Qwen2VLAdapter"]
