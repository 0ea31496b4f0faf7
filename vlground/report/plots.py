"""Matplotlib figures of the report (Agg backend; each function writes one PNG and returns its path).

Conventions: probed steps are drawn as markers (a faint dotted line joins them only to guide the
eye); the band over seeds is the min-max range of the seeds (it never leaves the valid range),
and with at most :data:`MAX_SEED_LINES` seeds each seed is also drawn as a thin line; effect
axes always show at least ``±2 x min_effect`` and shade the region below the minimum effect of
interest, so a 1e-4-nat effect reads as the flat zero it is, not as a signal.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vlground import stats  # noqa: E402

#: Okabe & Ito's colour-blind-safe palette (distinct under protanopia, deuteranopia, tritanopia)
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
COLORS = {"match": OKABE_ITO[0], "mismatch": OKABE_ITO[1], "info_gain": OKABE_ITO[0], "r2": OKABE_ITO[4],
          "gather": OKABE_ITO[2], "aggregate": OKABE_ITO[3]}
#: sequential colour maps (perceptually uniform, colour-blind safe)
SEQ_CMAP, HEAT_CMAP = "viridis", "magma"
#: layers per panel of the information-flow small multiples
LAYERS_PER_PANEL = 3
#: draw every seed as its own line up to this many seeds
MAX_SEED_LINES = 5
DPI = 110


def _save(fig, path: Path) -> Path:
    """Lay out and write ``fig`` as ``path`` (atomically), or hand it to the worker processes of
    an open :func:`vlground.report.render.rendering` block; returns ``path`` either way."""
    from vlground.report import render

    path = Path(path)
    r = render.active()
    if r is not None:
        import pickle

        try:
            data = pickle.dumps(fig)
        except Exception:  # noqa: BLE001  (an artist that does not pickle: draw it here)
            data = None
        if data is not None:
            plt.close(fig)
            r.submit(data, path)
            return path
    _render(fig, path)
    return path


def _render(fig, path: Path) -> None:
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    tmp.replace(path)


def step_ticks(max_step: float) -> list[int]:
    """Ticks of a symlog step axis: 0 and the powers of ten up to ``max_step`` (never negative)."""
    ticks, t = [0], 1
    while t <= max_step:
        ticks.append(t)
        t *= 10
    return ticks


def _steps_axis(ax, steps, label: bool = True) -> None:
    """Training steps on x: symlog (linear below 1, so step 0 is drawn) with ticks at 0 and powers
    of ten only (no empty negative ticks) when the steps span more than a decade."""
    if label:
        ax.set_xlabel("training step")
    steps = [s for s in steps if s is not None and math.isfinite(s)]
    if steps and max(steps) > 10:
        from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

        ax.set_xscale("symlog", linthresh=1, linscale=0.5)
        ax.set_xlim(0 if min(steps) >= 0 else min(steps), max(steps) * 1.35)  # room for the last marker
        ax.xaxis.set_major_locator(FixedLocator(step_ticks(max(steps) * 1.35)))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))  # picklable: figures go to worker processes
        ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(alpha=0.3)


def seed_series(ax, df, field: str, color: str, label: str, step: str = "step", seed: str = "seed") -> list:
    """Mean over seeds (markers at probed steps), min-max band, and one thin line per seed when few.

    ``df``: one row per (seed, step) with column ``field``. Returns the steps drawn.
    """
    d = df[[step, seed, field]].dropna()
    if d.empty:
        return []
    steps = sorted(d[step].unique())
    bands = [stats.seed_band(d.loc[d[step] == s, field].to_numpy()) for s in steps]
    n_seeds = d[seed].nunique()
    sparse = len(steps) <= 8
    ax.plot(steps, [b[0] for b in bands], color=color, marker="o", ms=4 if sparse else 2.5,
            lw=0.8 if sparse else 1.4, ls=":" if sparse else "-", label=f"{label} (mean of {n_seeds} seeds)" if n_seeds > 1 else label)
    if n_seeds > 1:
        ax.fill_between(steps, [b[1] for b in bands], [b[2] for b in bands], color=color, alpha=0.15, lw=0,
                        label=f"{label}: min-max over seeds")
        if n_seeds <= MAX_SEED_LINES:
            for i, (_, sd) in enumerate(d.groupby(seed)):
                sd = sd.sort_values(step)
                ax.plot(sd[step], sd[field], color=color, lw=0.6, alpha=0.45, label=f"{label}: each seed" if i == 0 else None)
    return steps


def surprisal_plot(per_ckpt, group: str, path: Path, reverse: bool = False) -> Path:
    """Match vs mismatch surprisal over steps: mean, min-max band and lines over seeds."""
    p = "reverse_" if reverse else ""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = seed_series(ax, per_ckpt, f"{p}match_surprisal", COLORS["match"], "match")
    steps += seed_series(ax, per_ckpt, f"{p}mismatch_surprisal", COLORS["mismatch"], "mismatch")
    ax.set_ylabel("surprisal (nats)")
    ax.set_ylim(bottom=0)
    target = "w<ENV> given w<LAN>" if reverse else "w<LAN> given w<ENV>"
    ax.set_title(f"{group}: {target}", fontsize=10)
    ax.legend(fontsize=7)
    _steps_axis(ax, steps)
    return _save(fig, path)


def effect_axis(ax, values, min_effect: float) -> None:
    """Y-limits showing at least ``±2 x min_effect`` and a shaded 'below minimum effect' zone."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    lo = min(-2 * min_effect, float(v.min()) if v.size else 0.0)
    hi = max(2 * min_effect, float(v.max()) if v.size else 0.0)
    pad = 0.05 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.axhspan(-min_effect, min_effect, color="0.85", alpha=0.6, lw=0, label=f"below the minimum effect ({min_effect:g} nats)")
    ax.axhline(0, color="0.4", lw=0.6)


def info_gain_plot(per_ckpt, group: str, path: Path, min_effect: float = stats.MIN_EFFECT, reverse: bool = False) -> Path:
    """Information gain (never zoomed below ``±2 x min_effect``) and, in a second panel under it on
    the same steps, R² against co-occurrence (0-1): two axes, never one twin axis."""
    p = "reverse_" if reverse else ""
    has_r2 = f"{p}r2_cooc" in per_ckpt and per_ckpt[f"{p}r2_cooc"].notna().any()
    if has_r2:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = seed_series(ax, per_ckpt, f"{p}info_gain", COLORS["info_gain"], "information gain")
    cols = [c for c in (f"{p}info_gain",) if c in per_ckpt]
    effect_axis(ax, per_ckpt[cols[0]].tolist() if cols else [], min_effect)
    ax.set_ylabel("information gain (nats)")
    ax.set_title(f"{group}: information gain{' (reverse)' if reverse else ''}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    if has_r2:
        seed_series(ax2, per_ckpt, f"{p}r2_cooc", COLORS["r2"], "R² vs co-occurrence")
        ax2.set_ylabel("R²")
        ax2.set_ylim(0, 1)
        ax2.legend(fontsize=7, loc="upper left")
        _steps_axis(ax, steps, label=False)
        _steps_axis(ax2, steps)
    else:
        _steps_axis(ax, steps)
    return _save(fig, path)


def training_curves(logs: dict[str, list[dict]], path: Path) -> Path:
    """Training loss (solid) and validation loss (markers at checkpoints) of each run."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    steps: list = []
    for i, (run, recs) in enumerate(sorted(logs.items())):
        tr = [(r["step"], r["loss"]) for r in recs if r.get("loss") is not None]
        va = [(r["step"], r["val_loss"]) for r in recs if r.get("val_loss") is not None]
        c = OKABE_ITO[i % len(OKABE_ITO)]
        if tr:
            ax.plot(*zip(*tr), color=c, lw=1.1, label=f"{run} train")
            steps += [s for s, _ in tr]
        if va:
            ax.plot(*zip(*va), color=c, lw=0.6, ls="--", marker="s", ms=3, label=f"{run} validation")
            steps += [s for s, _ in va]
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("training (solid) and validation (dashed, at checkpoints) loss", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    _steps_axis(ax, steps)
    return _save(fig, path)


def layer_groups(layers: list, per_panel: int = LAYERS_PER_PANEL) -> list[list]:
    """Consecutive layers in groups of at most ``per_panel`` (early ... late), as even as possible."""
    layers = list(layers)
    n = max(1, -(-len(layers) // per_panel))
    size = -(-len(layers) // n)
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def layer_curves(df, value: str, path: Path, title: str, ylabel: str, ylim: tuple | None = None) -> Path:
    """Small multiples: one panel per group of consecutive layers (:func:`layer_groups`), each
    layer a series over steps (markers at the probed steps; min-max band over seeds), one shared
    y-axis so panels compare.

    ``df``: rows with ``layer, step, seed, <value>``; ``layer`` as users read it (1-based).
    """
    layers = sorted(df["layer"].unique())
    groups = layer_groups(layers)
    ncol = min(3, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol + 0.6, 2.7 * nrow + 0.6), sharey=True, squeeze=False)
    for k, (ax, group) in enumerate(zip(axes.flat, groups)):
        steps: list = []
        for i, layer in enumerate(group):
            sub = df[df["layer"] == layer].groupby(["step", "seed"], as_index=False)[value].mean()
            steps += seed_series(ax, sub, value, OKABE_ITO[i % len(OKABE_ITO)], f"layer {layer}")
        ax.set_title(f"layers {group[0]}-{group[-1]}" if len(group) > 1 else f"layer {group[0]}", fontsize=9)
        if k % ncol == 0:
            ax.set_ylabel(ylabel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend(fontsize=6)
        _steps_axis(ax, steps)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def heatmap(matrix, xlabels, ylabels, path: Path, title: str, xlabel: str, ylabel: str, cbar: str,
            marks: dict | None = None, cmap: str = HEAT_CMAP, vmin: float | None = None, vmax: float | None = None) -> Path:
    """A labelled heatmap with a colorbar; ``marks`` = {(row, col): color} outlines cells.
    ``vmin``/``vmax``: a fixed colour scale (pass the same to every plot that is compared)."""
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(xlabels) + 2), max(3, 0.3 * len(ylabels) + 1.5)))
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=cmap, interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(xlabels)), [str(x) for x in xlabels], rotation=90, fontsize=7)
    ax.set_yticks(range(len(ylabels)), [str(y) for y in ylabels], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for (r, c), color in (marks or {}).items():
        ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec=color, lw=2))
    fig.colorbar(im, ax=ax, label=cbar)
    return _save(fig, path)


def head_grid(maps, tokens: list[str], layers: list[int], path: Path, title: str, marks: dict | None = None) -> Path:
    """Every head's saliency map in one grid: rows = layers, columns = heads.

    ``maps``: ``[layers, heads, seq, seq]`` (row i, column j = flow from token j into token i),
    drawn on one shared colour scale with one colorbar; layer and head numbers label the grid,
    tokens tick the outer axes, and ``marks`` = {(layer_index, head): (color, label)} outlines
    identified heads (gather / aggregate).
    """
    maps = np.asarray(maps, dtype=float)
    n_l, n_h, seq = maps.shape[0], maps.shape[1], maps.shape[2]
    cell = 1.9 if seq <= 12 else 2.4
    fig, axes = plt.subplots(n_l, n_h, figsize=(cell * n_h + 2.2, cell * n_l + 1.8), squeeze=False)
    vmax = 1.0  # maps are normalised to their maximum: one fixed 0-1 scale, the same in every grid
    im = None
    show_tokens = seq <= 24
    for li in range(n_l):
        for h in range(n_h):
            ax = axes[li, h]
            im = ax.imshow(maps[li, h], cmap=SEQ_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if li == 0:
                ax.set_title(f"head {h + 1}", fontsize=8)  # 1-based, as the heads table (docs/probes.md)
            if h == 0:
                ax.set_ylabel(f"layer {layers[li]}", fontsize=8)
                if show_tokens:
                    ax.set_yticks(range(seq), tokens[:seq], fontsize=5.5)
            if li == n_l - 1 and show_tokens:
                ax.set_xticks(range(seq), tokens[:seq], rotation=90, fontsize=5.5)
            mark = (marks or {}).get((li, h))
            if mark:
                for s in ax.spines.values():
                    s.set_edgecolor(mark[0])
                    s.set_linewidth(3)
    handles = {v for v in (marks or {}).values()}
    if handles:
        from matplotlib.patches import Patch

        fig.legend([Patch(fc="none", ec=c, lw=2) for c, _ in sorted(handles)], [lab for _, lab in sorted(handles)],
                   loc="upper right", bbox_to_anchor=(0.99, 0.995), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.02, y=0.995, ha="left")
    fig.tight_layout(rect=(0, 0, 0.88, 0.93))
    cax = fig.add_axes((0.9, 0.15, 0.018, 0.7))
    fig.colorbar(im, cax=cax, label="saliency / the map's maximum (fixed 0-1 scale)")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    tmp.replace(path)
    return path


def box_overlay(panels: list[dict], path: Path, title: str) -> Path:
    """Photos side by side, each with its box and a per-patch saliency overlay.

    ``panels``: ``{"image": HxWx3 uint8 array, "box": (x, y, w, h) in pixels or None,
    "patches": [grid_h, grid_w] saliency or None, "label": str}``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.8, 3.8), squeeze=False)
    im = None
    vmax = max([float(np.nanmax(p["patches"])) for p in panels if p.get("patches") is not None] + [1e-12])
    for ax, p in zip(axes[0], panels):
        img = np.asarray(p["image"])
        ax.imshow(img)
        if p.get("patches") is not None:
            h, w = img.shape[:2]
            im = ax.imshow(np.asarray(p["patches"], dtype=float), cmap=HEAT_CMAP, alpha=0.55, extent=(0, w, h, 0),
                           vmin=0, vmax=vmax, interpolation="nearest")
        if p.get("box") is not None:
            x, y, bw, bh = p["box"]
            ax.add_patch(plt.Rectangle((x, y), bw, bh, fill=False, ec="cyan", lw=2))
        ax.set_title(p.get("label", ""), fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), label="saliency into the name", shrink=0.8)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def shares_over_training(df, path: Path) -> Path:
    """Share of all saliency carried by gather and aggregate heads (markers at probed steps)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps: list = []
    for key, color in (("gather_saliency_share", COLORS["gather"]), ("aggregate_saliency_share", COLORS["aggregate"])):
        if key in df:
            steps += seed_series(ax, df, key, color, key.split("_")[0])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of all saliency")
    ax.set_title("saliency carried by gather / aggregate heads", fontsize=10)
    ax.legend(fontsize=7)
    _steps_axis(ax, steps)
    return _save(fig, path)
