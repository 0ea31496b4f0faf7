"""A tiny, randomly initialised Qwen2-VL checkpoint (tests and benchmarks; nothing downloaded).

:func:`save_tiny_qwen2vl` builds a ``Qwen2VLForConditionalGeneration`` at toy size under
``torch.manual_seed(seed)`` (one-block vision tower with 2x2 patch merger, two-layer Qwen2 decoder
with M-RoPE) and saves it with its ``Qwen2VLImageProcessorPil`` (no torchvision needed) and a
WordPiece tokenizer holding Qwen's special tokens (``<|image_pad|>``, ``<|vision_start|>``,
``<|vision_end|>``, ``<|im_start|>``, ``<|im_end|>``). Code loads the folder exactly as it loads
``Qwen/Qwen2-VL-7B-Instruct`` (``--model FOLDER``).

Geometry: ``patch_size`` px patches (default 4), merged 2x2 into one token of 8 px; every image is
resized by Qwen's ``smart_resize`` to multiples of 8 px holding at most ``max_tokens`` tokens, so a
600x400 photo becomes 64x40 px, a grid of 5x8 tokens, and a square photo another grid.
"""
from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>", "<|video_pad|>"]
EXTRA_WORDS = ["user", "assistant", "system"]


def tiny_qwen_tokenizer():
    """The tiny LLaVA WordPiece vocabulary plus Qwen's special tokens and chat-role words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vlground.vision.tiny_llava import tiny_vocab

    vocab = tiny_vocab()
    for w in EXTRA_WORDS + SPECIAL:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": SPECIAL})
    return fast


def tiny_qwen2vl_parts(seed: int = 0, patch_size: int = 4, max_tokens: int = 48, layers: int = 2, heads: int = 4,
                       version: str = "2"):
    """``(model, image_processor, tokenizer)`` of a tiny Qwen2-VL (``version="2.5"``: Qwen2.5-VL, windowed
    vision attention; see the module docstring)."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = tiny_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    hidden = 32
    head_dim = hidden // heads
    if version == "2.5":
        vision = dict(depth=2, hidden_size=16, out_hidden_size=hidden, intermediate_size=32, num_heads=2,
                      patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2, window_size=4 * patch_size,
                      fullatt_block_indexes=[1])
    else:
        vision = dict(depth=1, embed_dim=16, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=patch_size,
                      spatial_merge_size=2, temporal_patch_size=2)
    config_cls, model_cls = ((Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration) if version == "2.5"
                             else (Qwen2VLConfig, Qwen2VLForConditionalGeneration))
    config = config_cls(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=tokenizer.pad_token_id),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # larger embeddings than the 0.02 init, so scores vary by word
        model.get_input_embeddings().weight.normal_(0, 1.0)
    factor = patch_size * 2
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                               min_pixels=4 * factor * factor, max_pixels=max_tokens * factor * factor)
    return model, image_processor, tokenizer


def save_tiny_qwen2vl(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny Qwen2-VL and ``save_pretrained`` model, image processor and tokenizer into ``folder``."""
    folder = Path(folder)
    model, image_processor, tokenizer = tiny_qwen2vl_parts(seed, **sizes)
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
