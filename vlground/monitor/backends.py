"""Prompts, images and words for the monitor, per adapter family (the adapter does the model work).

A :class:`Backend` turns ``(image file, prompt)`` into model inputs of batch one plus the image-token
positions, and generated token ids into text with each token's character span (to find the words).

* :class:`HFBackend`, for adapters built on ``HFVisionLanguageAdapter`` (llava15, and the qwen2vl /
  llava_next adapters built on it): the checkpoint's processor on the image and the chat-formatted
  prompt (the adapter's ``chat_format``, else the processor's chat template); image tokens are the
  positions the adapter's ``image_positions`` names.
* :class:`TestbedBackend`, for ``visdial_dinov2``: the adapter's own batch for an item showing that
  image (its ``<bos> <image> x n`` prefix, features and ``env_span``), with the text after the image
  replaced by the prompt in the corpus's vocabulary (``<Q>``-style markers as written, other words as
  ``w<LAN>``). Images are the adapter's items' images (match and inpainted), so features come from
  the adapter's cache, computed by the corpus's own vision model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlground.engine.adapter import Adapter, LoadedModel
from vlground.errors import InputError


@dataclass
class Encoded:
    inputs: dict[str, torch.Tensor]  #: model inputs, batch 1
    image: torch.Tensor  #: bool ``[S]``: the image tokens the score reads


class Backend:
    """What differs between adapter families (see the module docstring)."""

    yes_no: tuple[list[int], list[int]] | None = None  #: first-token ids of the yes / no answers (None: no such words)
    stop_ids: set[int] = frozenset()

    def __init__(self, adapter: Adapter, loaded: LoadedModel):
        self.adapter, self.loaded = adapter, loaded

    def prompt(self, question: str, answer_prefix: str = "") -> str:
        raise NotImplementedError

    def encode(self, image: str, prompt: str) -> Encoded:
        raise NotImplementedError

    def text(self, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
        """Text of generated ``ids`` and each token's ``[start, end)`` characters in it."""
        raise NotImplementedError

    def word_token_ids(self, words: list[str]) -> list[int]:
        """First token of each word as the model would generate it after a space (for mitigation)."""
        raise NotImplementedError


def backend_for(adapter: Adapter, loaded: LoadedModel) -> Backend:
    from vlground.adapters.hf_vlm import HFVisionLanguageAdapter
    from vlground.adapters.visdial_dinov2 import VisdialDinov2Adapter

    if isinstance(adapter, HFVisionLanguageAdapter):
        return HFBackend(adapter, loaded)
    if isinstance(adapter, VisdialDinov2Adapter):
        return TestbedBackend(adapter, loaded)
    raise InputError(f"adapter {adapter.name}: the monitor needs a vision-language adapter (llava15, qwen2vl, "
                     "llava_next, paligemma, gemma3, idefics3, internvl, visdial_dinov2)")


class HFBackend(Backend):
    def __init__(self, adapter, loaded):
        super().__init__(adapter, loaded)
        self.tok = loaded.tokenizer
        self.processor = loaded.extra["processor"]
        if self.tok.eos_token_id is not None:
            self.stop_ids = {int(self.tok.eos_token_id)}
        yes = self._first_ids(["Yes", "yes"])
        no = self._first_ids(["No", "no"])
        self.yes_no = (yes, no) if yes and no and not set(yes) & set(no) else None

    def _first_ids(self, words: list[str]) -> list[int]:
        """First token of each word after a space and after a newline (answers start either way)."""
        base = self.tok("ASSISTANT:", add_special_tokens=False).input_ids
        out = []
        for w in words:
            for sep in (" ", "\n"):
                ids = self.tok("ASSISTANT:" + sep + w, add_special_tokens=False).input_ids
                ids = ids[len(base):] if ids[: len(base)] == base else []
                ids = [i for i in ids if self.tok.decode([i]).strip()]  # a lone space / newline token is not the word
                if ids and ids[0] != self.tok.unk_token_id and ids[0] not in out:
                    out.append(int(ids[0]))
        return out

    def prompt(self, question: str, answer_prefix: str = "") -> str:
        a = self.adapter
        token = a.image_token(self.loaded)
        if a.chat_format is not None:
            return a.chat_format.format(image=token, question=question, answer=answer_prefix).rstrip()
        if not getattr(self.processor, "chat_template", None):
            raise InputError(f"{self.loaded.checkpoint.path}: no chat template")
        turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return (self.processor.apply_chat_template(turn, add_generation_prompt=True) + " " + answer_prefix).rstrip()

    def encode(self, image: str, prompt: str) -> Encoded:
        from PIL import Image

        from vlground.vision.pixels import to_rgb

        try:
            with Image.open(image) as im:
                rgb = to_rgb(im)
        except OSError as exc:
            raise InputError(f"{image}: cannot read image ({type(exc).__name__})") from None
        from vlground.adapters.hf_vlm import model_input_tensors

        inputs = model_input_tensors(self.adapter.call_hook("process", self.loaded, rgb, prompt))  # no ``labels``
        ids = inputs["input_ids"][0]
        mask = torch.zeros(ids.shape[0], dtype=torch.bool)
        mask[self.adapter.image_positions(self.loaded, ids)] = True
        return Encoded(inputs, mask)

    def text(self, ids):
        spans, prev = [], ""
        for k in range(len(ids)):
            now = self.tok.decode(ids[: k + 1], skip_special_tokens=True)
            spans.append((len(prev), len(now)))
            prev = now
        return prev, spans

    def word_token_ids(self, words):
        return sorted({i for w in words for i in self._first_ids([w, w.capitalize()])})


class TestbedBackend(Backend):
    def __init__(self, adapter, loaded):
        super().__init__(adapter, loaded)
        self.vocab = loaded.tokenizer.get_vocab()
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.stop_ids = {self.vocab[t] for t in ("<eos>", "<Q>") if t in self.vocab}
        by_image: dict[str, tuple] = {}
        for it in adapter.items(loaded):
            obj = it.meta["object"]
            by_image.setdefault(obj.image if it.condition == "match" else obj.mismatch_image, it)
        self.by_image = by_image

    def _token(self, word: str) -> str:
        return word if word.startswith("<") and word.endswith(">") else f"{word.lower()}<LAN>"

    def prompt(self, question: str, answer_prefix: str = "") -> str:
        return f"<Q> {question} <A> {answer_prefix}".strip()

    def encode(self, image: str, prompt: str) -> Encoded:
        item = self.by_image.get(str(image))
        if item is None:
            raise InputError(f"{image}: not among the adapter's probe images (no item shows it)")
        toks = [self._token(w) for w in prompt.split()]
        missing = [t for t in toks if t not in self.vocab]
        if missing:
            raise InputError(f"prompt {prompt!r}: not in the model's vocabulary: {', '.join(missing)}")
        batch = self.adapter.batch(self.loaded, [item])
        image_mask = batch.model_inputs["image_mask"][0]
        prefix = int(image_mask.nonzero().max()) + 1  # <bos> and the image tokens
        ids = torch.cat([batch.model_inputs["input_ids"][0, :prefix], torch.tensor([self.vocab[t] for t in toks])])[None]
        S = ids.shape[1]
        im = torch.zeros((1, S), dtype=torch.bool)
        im[0, :prefix] = image_mask[:prefix]
        span = torch.zeros(S, dtype=torch.bool)
        span[:prefix] = batch.env_span[0, :prefix]
        inputs = {"input_ids": ids, "attention_mask": torch.ones((1, S), dtype=torch.long),
                  "image_features": batch.model_inputs["image_features"], "image_mask": im}
        return Encoded(inputs, span)

    def text(self, ids):
        parts, spans, pos = [], [], 0
        for i in ids:
            t = self.inverse.get(int(i), "<unk>")
            t = t[: -len("<LAN>")] if t.endswith("<LAN>") else t
            start = pos + (1 if parts else 0)
            parts.append(t)
            spans.append((start, start + len(t)))
            pos = start + len(t)
        return " ".join(parts), spans

    def word_token_ids(self, words):
        return sorted({self.vocab[self._token(w)] for w in words if self._token(w) in self.vocab})
