"""Tiny, randomly initialised PaliGemma (1 and 2) and Gemma 3 checkpoints (tests; nothing downloaded).

Both use a one-block SigLIP vision tower and a two-layer Gemma decoder (Gemma 2 for PaliGemma 2,
Gemma 3 for Gemma 3), a WordPiece tokenizer over the tiny LLaVA vocabulary plus each family's
special tokens, and the family's own processor (``PaliGemmaProcessor`` with
``SiglipImageProcessorPil``; ``Gemma3Processor`` with ``Gemma3ImageProcessorPil``), saved with
``save_pretrained`` so code loads the folder as it loads ``google/paligemma2-3b-mix-224`` or
``google/gemma-3-4b-it`` (``--model FOLDER``).

Geometry: PaliGemma resizes every image to ``image_size`` (default 32) px squares, ignoring its
aspect ratio, in 4 px patches: an 8x8 grid of 64 image tokens, placed before ``<bos>`` and the
prompt. Gemma 3 resizes to ``image_size`` (default 32) px, 4 px patches (8x8), average-pooled 2x2
into a 4x4 grid of ``mm_tokens_per_image`` = 16 soft tokens between ``<start_of_image>`` and
``<end_of_image>``.
"""
from __future__ import annotations

from pathlib import Path

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
GEMMA3_SPECIAL = ["<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"]
WORDS = ["user", "model", "answer", "en", "caption", "\n"]


def _tokenizer(extra_special: list[str], **named):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vlground.vision.tiny_llava import WORDS as LLAVA_WORDS

    vocab: dict[str, int] = {}
    for w in GEMMA_SPECIAL + extra_special + WORDS + LLAVA_WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", **named)
    if extra_special:
        fast.add_special_tokens({"additional_special_tokens": extra_special})
    return fast


def _siglip(image_size: int, patch_size: int):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=patch_size)


def tiny_paligemma_parts(seed: int = 0, image_size: int = 32, patch_size: int = 4, layers: int = 2, heads: int = 4,
                         version: int = 2):
    """``(model, processor)`` of a tiny PaliGemma (``version=1``: Gemma decoder; 2: Gemma 2)."""
    import torch
    from transformers import Gemma2Config, GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = _tokenizer(["<image>"], extra_special_tokens={"image_token": "<image>"})
    n = (image_size // patch_size) ** 2
    images = SiglipImageProcessorPil(size={"height": image_size, "width": image_size}, image_seq_length=n)
    images.image_seq_length = n
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    vocab = len(processor.tokenizer)
    text_cls = Gemma2Config if version == 2 else GemmaConfig
    text = text_cls(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                    num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=8, max_position_embeddings=512,
                    pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, **({"sliding_window": 64} if version == 2 else {}))
    config = PaliGemmaConfig(vision_config=_siglip(image_size, patch_size), text_config=text,
                             image_token_index=processor.image_token_id, vocab_size=vocab, projection_dim=32, hidden_size=32)
    config.vision_config.projection_dim = 32
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
    return model, processor


def tiny_gemma3_parts(seed: int = 0, image_size: int = 32, patch_size: int = 4, tokens_per_side: int = 4,
                      layers: int = 2, heads: int = 4):
    """``(model, processor)`` of a tiny Gemma 3 (see the module docstring)."""
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = _tokenizer(GEMMA3_SPECIAL, extra_special_tokens={
        "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"})
    n = tokens_per_side ** 2
    images = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=n)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA3_SPECIAL}
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                            num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=8, query_pre_attn_scalar=8,
                            max_position_embeddings=512, sliding_window=64, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = Gemma3Config(text_config=text, vision_config=_siglip(image_size, patch_size).to_dict(), mm_tokens_per_image=n,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"])
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
        # the projection is initialised to zeros (a dead image pathway); a random one as a trained model has
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.5)
    return model, processor


def _save(parts, folder: str | Path) -> Path:
    folder = Path(folder)
    model, processor = parts
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_paligemma(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny PaliGemma and ``save_pretrained`` model and processor into ``folder``."""
    return _save(tiny_paligemma_parts(seed, **sizes), folder)


def save_tiny_gemma3(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny Gemma 3 and ``save_pretrained`` model and processor into ``folder``."""
    return _save(tiny_gemma3_parts(seed, **sizes), folder)
