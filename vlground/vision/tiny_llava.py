"""A tiny, randomly initialised LLaVA-1.5 checkpoint (tests and the demo; nothing downloaded).

:func:`save_tiny_llava` builds a ``LlavaForConditionalGeneration`` at toy size under
``torch.manual_seed(seed)`` (CLIP vision tower, two-layer projector, Llama decoder) together with
a matching ``LlavaProcessor`` (``CLIPImageProcessor`` + a WordPiece ``PreTrainedTokenizerFast``
with ``<image>`` added, ``patch_size``, ``vision_feature_select_strategy="default"`` and the
LLaVA-1.5 chat template) and saves both with ``save_pretrained``. Code then loads the folder
exactly as it loads ``llava-hf/llava-1.5-7b-hf`` (``--model FOLDER``).

Geometry: ``image_size`` px input (short side resized, centre crop), ``patch_size`` px patches,
so ``(image_size // patch_size) ** 2`` image tokens (CLS dropped, as in LLaVA-1.5). The default
24 px / 4 px gives a 6x6 grid of 36 image tokens.

Vocabulary: the words of the LLaVA-1.5 prompt, the category names of the bundled photographs
and a few WordPiece pieces, so that some names split into several sub-tokens (``motorcycle`` ->
``motor ##cycle``) and the summed-sub-token path is exercised.
"""
from __future__ import annotations

from pathlib import Path

#: LLaVA-1.5's conversation format (``USER: <image>\n... ASSISTANT:``) as a chat template
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

SPECIAL = ["[PAD]", "[UNK]", "<s>", "</s>", "<image>"]
WORDS = (
    "USER ASSISTANT : ? . , What what is in the picture It it a an this photo of Describe image "
    "person bicycle bench cat cup spoon shuttle rocket dog car chair table bowl bottle book clock "
    "laptop keyboard phone tie umbrella saucer flag tower box motor ##cycle hel ##met astro ##naut bus"
).split()


def tiny_vocab() -> dict[str, int]:
    vocab: dict[str, int] = {}
    for w in SPECIAL + WORDS:
        vocab.setdefault(w, len(vocab))
    return vocab


def tiny_tokenizer():
    """A WordPiece ``PreTrainedTokenizerFast`` (BOS ``<s>`` prepended, ``<image>`` special)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def tiny_llava_parts(seed: int = 0, image_size: int = 24, patch_size: int = 4, layers: int = 2, heads: int = 8):
    """``(model, processor)`` of a tiny LLaVA-1.5 (see the module docstring)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = tiny_tokenizer()
    vocab_size = len(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch_size, projection_dim=16)
    text = LlamaConfig(num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                       hidden_size=32, intermediate_size=64, vocab_size=vocab_size, max_position_embeddings=256,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger embeddings and logits than the 0.02 init, so scores vary by word
        model.get_input_embeddings().weight.normal_(0, 1.0)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_resize=True, do_normalize=True, do_convert_rgb=True,
    )
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    return model, processor


def save_tiny_llava(folder: str | Path, seed: int = 0, **sizes) -> Path:
    """Build a tiny LLaVA-1.5 and ``save_pretrained`` model and processor into ``folder``."""
    folder = Path(folder)
    model, processor = tiny_llava_parts(seed, **sizes)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
