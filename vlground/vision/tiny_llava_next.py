"""A tiny, randomly initialised LLaVA-NeXT checkpoint (tests and benchmarks; nothing downloaded).

:func:`save_tiny_llava_next` builds a ``LlavaNextForConditionalGeneration`` at toy size under
``torch.manual_seed(seed)`` (CLIP vision tower, projector, learned ``image_newline``, Llama
decoder) with a ``LlavaNextProcessor`` (``LlavaNextImageProcessorPil`` + the tiny LLaVA WordPiece
tokenizer) and saves both; code loads the folder as it loads ``llava-hf/llava-v1.6-mistral-7b-hf``.

Geometry ("anyres"): crops of ``image_size`` px (default 24) in 4 px patches, so the base view is
a 6x6 grid; ``image_grid_pinpoints`` offers 1x2, 2x1 and 2x2 crops, so a 600x400 photo is resized
into a 48x48 canvas (padded top and bottom), its four crops give a 12x12 grid of which the
unpadded rows are kept, each row followed by a newline token.
"""
from __future__ import annotations

from pathlib import Path


def tiny_llava_next_parts(seed: int = 0, image_size: int = 24, patch_size: int = 4, layers: int = 2, heads: int = 4):
    """``(model, processor)`` of a tiny LLaVA-NeXT (see the module docstring)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from vlground.vision.tiny_llava import CHAT_TEMPLATE, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    s = image_size
    pinpoints = [[s, 2 * s], [2 * s, s], [2 * s, 2 * s]]
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=s, patch_size=patch_size, projection_dim=16)
    text = LlamaConfig(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                       hidden_size=32, intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             vision_feature_select_strategy="default", vision_feature_layer=-2, image_grid_pinpoints=pinpoints)
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 1.0)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch_size,
                                   vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                                   num_additional_image_tokens=1)
    return model, processor


def save_tiny_llava_next(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny LLaVA-NeXT and ``save_pretrained`` model and processor into ``folder``."""
    folder = Path(folder)
    model, processor = tiny_llava_next_parts(seed, **sizes)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
