"""Matplotlib figures from results (Agg backend; each function writes one PNG and returns its path)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"match": "tab:blue", "mismatch": "tab:red", "info_gain": "tab:blue", "r2": "tab:orange"}


def _xs(rows):
    return [r["step"] for r in rows]


def _band(ax, rows, field, color, label):
    rows = [r for r in rows if r.get(field) is not None and r.get("step") is not None]
    if not rows:
        return
    xs = _xs(rows)
    ax.plot(xs, [r[field] for r in rows], color=color, label=label, marker="o", ms=2.5, lw=1.4)
    if any(r.get("n_seeds", 1) > 1 for r in rows):
        ax.fill_between(xs, [r[field + "_low"] for r in rows], [r[field + "_high"] for r in rows], color=color, alpha=0.2, lw=0)


def _finish(fig, ax, path: Path, xlabel="training step"):
    ax.set_xlabel(xlabel)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def surprisal_plot(summary: list[dict], group: str, path: Path, reverse: bool = False) -> Path:
    """Match vs mismatch surprisal over steps, mean and 95% band over seeds."""
    p = "reverse_" if reverse else ""
    rows = [r for r in summary if r["group"] == group]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    _band(ax, rows, f"{p}match_surprisal", COLORS["match"], "match")
    _band(ax, rows, f"{p}mismatch_surprisal", COLORS["mismatch"], "mismatch")
    ax.set_ylabel("surprisal (nats)")
    target = "w<ENV> given w<LAN>" if reverse else "w<LAN> given w<ENV>"
    ax.set_title(f"{group}: {target}", fontsize=10)
    ax.legend(fontsize=8)
    return _finish(fig, ax, path)


def info_gain_plot(summary: list[dict], group: str, path: Path, reverse: bool = False) -> Path:
    """Information gain (left axis) and R² against cumulative co-occurrence (right axis)."""
    p = "reverse_" if reverse else ""
    rows = [r for r in summary if r["group"] == group]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    _band(ax, rows, f"{p}info_gain", COLORS["info_gain"], "information gain")
    ax.set_ylabel("information gain (nats)", color=COLORS["info_gain"])
    ax2 = ax.twinx()
    _band(ax2, rows, f"{p}r2_cooc", COLORS["r2"], "R² vs co-occurrence")
    ax2.set_ylabel("R²", color=COLORS["r2"])
    ax2.set_ylim(0, 1)
    ax.set_title(f"{group}: information gain and R²{' (reverse)' if reverse else ''}", fontsize=10)
    return _finish(fig, ax, path)


def layer_curves(rows: list[dict], value: str, path: Path, title: str, ylabel: str) -> Path:
    """One curve per layer over steps: mean over runs of a group, with a 95% band over seeds."""
    from vlground.metrics import mean_band

    layers = sorted({r["layer"] for r in rows})
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    cmap = plt.get_cmap("viridis", max(2, len(layers)))
    for i, layer in enumerate(layers):
        steps = sorted({r["step"] for r in rows if r["layer"] == layer and r.get(value) is not None})
        bands = [mean_band([r[value] for r in rows if r["layer"] == layer and r["step"] == s and r.get(value) is not None]) for s in steps]
        ax.plot(steps, [b[0] for b in bands], color=cmap(i), label=f"L{layer}", lw=1.2)
        ax.fill_between(steps, [b[1] for b in bands], [b[2] for b in bands], color=cmap(i), alpha=0.15, lw=0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    return _finish(fig, ax, path)


def heatmap(matrix, xlabels, ylabels, path: Path, title: str, xlabel: str, ylabel: str, cbar: str) -> Path:
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(xlabels) + 2), max(3, 0.3 * len(ylabels) + 1.5)))
    im = ax.imshow(matrix, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xticks(range(len(xlabels)), [str(x) for x in xlabels], rotation=90, fontsize=6)
    ax.set_yticks(range(len(ylabels)), [str(y) for y in ylabels], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
