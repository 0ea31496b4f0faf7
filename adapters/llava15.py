"""``llava15``: LLaVA-1.5 (``llava-hf/llava-1.5-7b-hf`` by default) through the Hugging Face VLM adapter.

Everything model-specific is declared here; the work is in :mod:`vlground.adapters.hf_vlm`:

* model: ``LlavaForConditionalGeneration`` (``config.model_type == "llava"``), eager attention;
* chat format: ``USER: <image>\\n{question} ASSISTANT: {answer}`` (LLaVA-1.5's conversation
  template), so the default prompt is ``USER: <image>\\nWhat is in the picture? ASSISTANT: It is a``;
* preprocessing for box mapping: read from the checkpoint's image processor (the HF processor
  resizes the short side to 336 and centre-crops 336x336, no padding: a 24x24 grid of 14 px
  patches); transformers 5 expands ``<image>`` into one token per patch (576; CLS dropped by
  ``vision_feature_select_strategy="default"``), which the adapter finds by the image token id;
* attention sites: the language model's ``self_attn.o_proj`` (``vlground.mechanism.sites``,
  resolver ``llava``); the vision tower is not probed.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter


class Llava15Adapter(HFVisionLanguageAdapter):
    name = "llava15"
    model_types = ("llava",)
    model_class = "LlavaForConditionalGeneration"
    processor_class = "AutoProcessor"
    chat_format = "USER: {image}\n{question} ASSISTANT: {answer}"
    description = "LLaVA checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "llava-hf/llava-1.5-7b-hf"  #: hub id or local folder of a LLaVA-1.5 checkpoint
