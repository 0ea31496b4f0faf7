"""A tiny, randomly initialised Idefics3 checkpoint (tests; nothing downloaded).

:func:`save_tiny_idefics3` builds an ``Idefics3ForConditionalGeneration`` at toy size under
``torch.manual_seed(seed)`` (one-block SigLIP-style vision tower, pixel-shuffle connector with
``scale_factor`` 2, two-layer Llama decoder) with an ``Idefics3Processor``
(``Idefics3ImageProcessorPil`` + the tiny LLaVA WordPiece vocabulary with Idefics3's special tokens)
and saves both, so code loads the folder as it loads ``HuggingFaceM4/Idefics3-8B-Llama3``.

Geometry: tiles of ``tile`` px (default 32) in 4 px patches, pixel-shuffled 2x2: 4x4 = 16 tokens
per tile. The image's longest edge is resized to ``longest`` px (default 64), then up to whole
tiles (each side rounded up to a multiple of ``tile``: a 600x400 photo becomes 64x64, 2x2 tiles),
plus a global view (the whole image at ``tile`` px) after the tiles.
"""
from __future__ import annotations

from pathlib import Path

SPECIAL = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]


def tiny_idefics3_parts(seed: int = 0, tile: int = 32, longest: int = 64, patch_size: int = 4, layers: int = 2,
                        heads: int = 4):
    """``(model, processor)`` of a tiny Idefics3 (see the module docstring)."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from vlground.vision.tiny_llava import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["User", "Assistant"])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    seq = (tile // patch_size // 2) ** 2
    images = Idefics3ImageProcessorPil(size={"longest_edge": longest}, max_image_size={"longest_edge": tile})
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=seq)
    text = LlamaConfig(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2, hidden_size=32,
                       intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=tile,
                  patch_size=patch_size)
    config = Idefics3Config(vision_config=vision, text_config=text.to_dict(), scale_factor=2,
                            image_token_id=processor.image_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
    return model, processor


def save_tiny_idefics3(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny Idefics3 and ``save_pretrained`` model and processor into ``folder``."""
    folder = Path(folder)
    model, processor = tiny_idefics3_parts(seed, **sizes)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
