"""A tiny, randomly initialised InternVL 3 checkpoint, transformers-native (tests; nothing downloaded).

:func:`save_tiny_internvl` builds an ``InternVLForConditionalGeneration`` at toy size under
``torch.manual_seed(seed)`` (one-layer InternViT, pixel shuffle ``downsample_ratio`` 0.5, MLP
projector, two-layer Qwen2 decoder) with a ``GotOcr2ImageProcessorPil`` (``crop_to_patches``) and the tiny LLaVA WordPiece vocabulary plus
``<img>``, ``</img>``, ``<IMG_CONTEXT>``, and saves them, as ``OpenGVLab/InternVL3-1B-hf`` is laid out
(less its ``InternVLProcessor`` config, which needs torchvision to load).

Geometry: tiles of ``tile`` px (default 32) in 4 px patches, pixel-shuffled to 4x4 = 16 tokens per
tile; the image is resized to the tile canvas (at most ``max_patches`` = 4 tiles) whose aspect ratio
is closest to its own, cut row-major, and followed by a thumbnail (the whole image at one tile).
"""
from __future__ import annotations

from pathlib import Path

SPECIAL = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|im_start|>", "<|im_end|>"]


def _tokenizer():
    """The tiny LLaVA WordPiece vocabulary plus InternVL's (Qwen-style) special tokens, named as its processor reads them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vlground.vision.tiny_llava import tiny_vocab

    vocab = tiny_vocab()
    for w in ["user", "assistant", "system"] + SPECIAL:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<|im_end|>",
                                   extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                                                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    fast.add_special_tokens({"additional_special_tokens": SPECIAL})
    return fast


def tiny_internvl_parts(seed: int = 0, tile: int = 32, patch_size: int = 4, max_patches: int = 4, layers: int = 2,
                        heads: int = 4):
    """``(model, image_processor, tokenizer)`` of a tiny InternVL 3 (see the module docstring; ``InternVLProcessor``
    itself needs torchvision for its video part, so the adapter builds its processor from these two)."""
    import torch
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = _tokenizer()
    seq = (tile // patch_size // 2) ** 2
    images = GotOcr2ImageProcessorPil(size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1,
                                      max_patches=max_patches)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=[tile, tile], patch_size=[patch_size, patch_size])
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
                            image_seq_length=seq, downsample_ratio=0.5)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
    return model, images, tokenizer


def save_tiny_internvl(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny InternVL 3 and ``save_pretrained`` model, image processor and tokenizer into ``folder``."""
    folder = Path(folder)
    for part in tiny_internvl_parts(seed, **sizes):
        part.save_pretrained(folder)
    return folder
