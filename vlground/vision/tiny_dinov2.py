"""Tiny, randomly initialised DINOv2 models saved as a folder (tests, the vision demo, benchmarks).

:func:`save_tiny_dinov2` builds a ``Dinov2Model`` from a small ``Dinov2Config`` under
``torch.manual_seed(seed)`` and a ``BitImageProcessor`` with DINOv2's own steps at toy size
(short side ``resize``, centre crop ``crop``, ImageNet normalisation), and writes both with
``save_pretrained``. Users' code then loads the folder exactly as it loads
``facebook/dinov2-base`` (``--vision FOLDER``): ``Dinov2Model.from_pretrained`` and
``AutoImageProcessor.from_pretrained``. Nothing is downloaded.

Defaults: hidden size 64 (so the tiny language model is 64 wide), 2 layers, 4 heads, 14 px
patches, a 112 px crop: an 8x8 grid, 65 tokens per image with the CLS token.
"""
from __future__ import annotations

from pathlib import Path

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def tiny_dinov2_config(hidden_size: int = 64, layers: int = 2, heads: int = 4, patch_size: int = 14, crop: int = 112):
    """A small ``Dinov2Config`` (``image_size`` = the crop, so positions need no interpolation)."""
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden_size, patch_size=patch_size, image_size=crop,
                        layerscale_value=1.0, drop_path_rate=0.0)


def tiny_dinov2_processor(resize: int = 128, crop: int = 112):
    """DINOv2's ``BitImageProcessor`` steps at toy size."""
    from transformers import BitImageProcessor

    return BitImageProcessor(do_resize=True, size={"shortest_edge": resize}, resample=3, do_center_crop=True,
                             crop_size={"height": crop, "width": crop}, do_rescale=True, rescale_factor=1 / 255,
                             do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                             do_convert_rgb=True)


def save_tiny_dinov2(folder: str | Path, seed: int = 0, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                     resize: int = 128, crop: int = 112) -> Path:
    """Build a tiny DINOv2 + processor and ``save_pretrained`` both into ``folder``; returns it."""
    import torch
    from transformers import Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    model = Dinov2Model(tiny_dinov2_config(hidden_size, layers, heads, crop=crop)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tiny_dinov2_processor(resize, crop).save_pretrained(folder)
    return folder
