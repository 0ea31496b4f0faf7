"""``paligemma``: PaliGemma and PaliGemma 2 (``google/paligemma2-3b-mix-224`` by default), a prefix LM.

What differs from LLaVA-1.5, declared here (the work is in :mod:`vlground.adapters.hf_vlm`):

* **Prompt.** No chat template: ``<image> x 256 <bos>{question}\\n`` (the processor adds ``<bos>``
  after the image tokens and the newline); the mix checkpoints answer ``answer en {question}``, so
  that is the default question's form and the answer prefix is empty: the object's name is the first
  answer token. A ``--answer-prefix`` goes into the answer (the processor's ``suffix``, its ``<eos>``
  and ``labels`` dropped), not into the prompt.
* **Prefix LM.** ``token_type_ids`` are 0 over the image and the prompt (attended bidirectionally)
  and 1 over the answer (causal). The target's later sub-tokens and padding get 1
  (``token_inputs``): a 0 there would put the answer into the prefix, so the predicted position would
  see it (the kit's no-leak check fails that).
* The processor returns ``labels`` (training targets); they are not model inputs and are left out
  with a note.
* Layout: one grid from the image processor (the whole image resized to ``image_size`` squared,
  aspect ratio ignored; 224 px / 14 px = 16x16 tokens), the default :meth:`image_layout`.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter, _word_ids


class PaliGemmaAdapter(HFVisionLanguageAdapter):
    name = "paligemma"
    model_types = ("paligemma",)
    model_class = "PaliGemmaForConditionalGeneration"
    chat_format = "{image}{question}"
    token_inputs = {"token_type_ids": 1}  # the answer's tokens (and padding) are causal
    description = "PaliGemma checkpoint"

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        model: str | None = "google/paligemma2-3b-mix-224"  #: hub id or local folder of a PaliGemma (1 or 2) checkpoint
        question: str = "answer en What is in the picture?"  #: the prompt (PaliGemma's task prefix and question)
        answer_prefix: str = ""  #: start of the answer (in the causal suffix); the object's name is the next word

    def process(self, loaded, image, prompt):
        prefix = self.options.answer_prefix.strip()
        if not prefix:
            return loaded.extra["processor"](images=[image], text=[prompt], return_tensors="pt")
        enc = dict(loaded.extra["processor"](images=[image], text=[prompt], suffix=[prefix], return_tensors="pt"))
        return {k: v[:, :-1] if k != "pixel_values" else v for k, v in enc.items()}  # drop the suffix's <eos>

    def word_ids(self, loaded, prompt, word):
        tok, prefix = loaded.tokenizer, self.options.answer_prefix.strip()
        if prefix:
            return _word_ids(tok, prefix, tok(prefix, add_special_tokens=False).input_ids, word)
        return _word_ids(tok, "", [], word)
