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
    :func:`~vlground.mechanism.flow.normalize_maps`): one row per layer, one column per head.
    ``layer_labels``: the 1-based layer number of each row (default 1..L); heads are labelled 1..H."""
    plt = _pyplot()
    n_layers, n_heads = maps.shape[:2]
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.2 * n_heads, 1.2 * n_layers), squeeze=False)
    for l_, row in enumerate(axes):
        for h, ax in enumerate(row):
            ax.imshow(maps[l_, h].float().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if h == 0:
                ax.set_ylabel(f"L{(layer_labels or range(1, n_layers + 1))[l_]}", fontsize=7)
            if l_ == 0:
                ax.set_title(f"H{h + 1}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_head_grid(grid: torch.Tensor, path: str | Path, title: str = "", layer_labels: Sequence[int] | None = None) -> Path:
    """Heatmap of one scalar per head ``[layers, heads]`` (e.g. from :func:`~vlground.mechanism.flow.head_grid`);
    ticks are 1-based layer numbers (``layer_labels``, default 1..L) and head numbers 1..H."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.4 * grid.shape[1] + 1.5, 0.3 * grid.shape[0] + 1.2))
    image = ax.imshow(grid.float().cpu().numpy(), cmap="magma", aspect="auto")
    ax.set_xlabel("head (1-based)")
    ax.set_xticks(range(grid.shape[1]), [str(h + 1) for h in range(grid.shape[1])])
    ax.set_yticks(range(grid.shape[0]), [str(k) for k in (layer_labels or range(1, grid.shape[0] + 1))])
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
