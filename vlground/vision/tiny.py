"""Tiny, randomly initialised Stable-Diffusion-2-inpainting pipelines (tests and the demo).

:func:`save_tiny_inpaint_pipeline` builds every component of a
``StableDiffusionInpaintPipeline`` at toy size under ``torch.manual_seed(seed)`` (the layout of
diffusers' own ``get_dummy_components`` for SD2 inpainting, smaller still), and saves it with
``pipe.save_pretrained(folder)``; users' code then loads the folder exactly as it loads
``stabilityai/stable-diffusion-2-inpainting`` (``--model FOLDER``). Nothing is downloaded: the
CLIP tokenizer's vocabulary is the 256 byte symbols (each also with the ``</w>`` end-of-word
suffix) plus the two special tokens, with no merges.

The output is noise-like; it exercises every code path (masking, 9-channel UNet, VAE, text
encoder, scheduler) in well under a second per image at 64 px on a CPU. The safety checker and
feature extractor are None, as in SD2 inpainting, which ships without them.
"""
from __future__ import annotations

from pathlib import Path

#: default image side the tiny pipeline generates at (UNet sample_size 32 x VAE factor 2)
TINY_RESOLUTION = 64


def _byte_vocab() -> dict[str, int]:
    # GPT-2 / CLIP byte-to-unicode table, so every byte has a printable symbol
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    symbols = [chr(c) for c in cs]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    return vocab


def tiny_inpaint_components(seed: int = 0) -> dict:
    """The components of a tiny SD2-inpainting pipeline (keyword arguments of the pipeline)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=9, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    vocab = _byte_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu",
        projection_dim=32,
    ))
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return {
        "unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler,
        "safety_checker": None, "feature_extractor": None, "image_encoder": None,
    }


def save_tiny_inpaint_pipeline(folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny SD2-inpainting pipeline and ``save_pretrained`` it to ``folder``; returns the folder."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = Path(folder)
    pipe = StableDiffusionInpaintPipeline(**tiny_inpaint_components(seed), requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
