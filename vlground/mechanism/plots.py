"""Tiny matplotlib helpers writing PNGs (Agg backend; matplotlib imported on call)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["plot_head_maps", "plot_head_grid"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_head_maps(maps: torch.Tensor, path: str | Path, layer_labels: Sequence[int] | None = None) -> Path:
    """Grid of saliency maps ``[layers, heads, seq, seq]`` (already normalised, e.g. by
    :func:`~vlground.mechanism.flow.normalize_maps`): one row per layer, one column per head."""
    plt = _pyplot()
    n_layers, n_heads = maps.shape[:2]
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.2 * n_heads, 1.2 * n_layers), squeeze=False)
    for l_, row in enumerate(axes):
        for h, ax in enumerate(row):
            ax.imshow(maps[l_, h].float().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if h == 0:
                ax.set_ylabel(f"L{(layer_labels or range(n_layers))[l_]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_head_grid(grid: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """Heatmap of one scalar per head ``[layers, heads]`` (e.g. from :func:`~vlground.mechanism.flow.head_grid`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.4 * grid.shape[1] + 1.5, 0.3 * grid.shape[0] + 1.2))
    image = ax.imshow(grid.float().cpu().numpy(), cmap="magma", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
