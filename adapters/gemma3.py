"""``gemma3``: Gemma 3 image-text models (``google/gemma-3-4b-it`` by default) through the HF VLM adapter.

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Image tokens.** The prompt holds ``<start_of_image>`` once; the processor expands it into
  ``\\n\\n<start_of_image>`` + ``mm_tokens_per_image`` (256) ``<image_soft_token>`` +
  ``<end_of_image>\\n\\n``. The model replaces the *soft* tokens by image features
  (``config.image_token_id``), while ``Gemma3Processor.image_token_id`` is the start-of-image id:
  :meth:`image_token_id` reads the config's.
* **One view, pooled.** SigLIP sees the whole image resized to 896 px squared (aspect ignored) in
  14 px patches (64x64), average-pooled 4x4 into a 16x16 grid: ``merge`` = 4, a 56 px cell.
  Pan-and-scan crops (``do_pan_and_scan``) are not supported (off by default in the processor).
* **Bidirectional image attention.** ``token_type_ids`` are 1 over the soft tokens (the language
  model attends bidirectionally within an image) and 0 elsewhere; the target's later sub-tokens and
  padding get 0 (``token_inputs``). Dropping them changes the scores (the kit's plain-processor check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter


class Gemma3Adapter(HFVisionLanguageAdapter):
    name = "gemma3"
    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    chat_format = "<start_of_turn>user\n{image}{question}<end_of_turn>\n<start_of_turn>model\n{answer}"
    token_inputs = {"token_type_ids": 0}
    description = "Gemma 3 checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "google/gemma-3-4b-it"  #: hub id or local folder of a Gemma 3 (image-text) checkpoint

    def image_token_id(self, loaded):
        return int(loaded.model.config.image_token_id)  # the soft token; the processor's is <start_of_image>

    def image_layout(self, loaded, enc, image_size):
        from vlground.vision.layout import single_grid_layout

        cfg = loaded.model.config
        side = math.isqrt(int(cfg.mm_tokens_per_image))
        merge = (cfg.vision_config.image_size // cfg.vision_config.patch_size) // side
        return single_grid_layout(self.preprocess(loaded), image_size, self.image_positions(loaded, enc["input_ids"][0]).tolist(),
                                  merge=merge)
