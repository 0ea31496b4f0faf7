"""Report sections for the mechanistic probes (flow, heads, ablation, lens), when present."""
from __future__ import annotations

import html
from pathlib import Path

from vlground.report import plots


def render(results, plot_dir: Path, img, table) -> list[str]:
    """Sections for :class:`vlground.results.Results` ``results``."""

    out: list[str] = []
    flow = results.rows("flow")
    if flow:
        figs = []
        for g in sorted({r["group"] for r in flow}):
            rows = [r for r in flow if r["group"] == g]
            safe = g.replace("/", "_").replace(":", "_")
            figs.append(img(plots.layer_curves(rows, "env_flow", plot_dir / f"{safe}-flow.png",
                                               f"{g}: saliency from the environment into the target position", "S_env / S_rest")))
        out.append("<h2>Information flow over training</h2><p class=note>Per layer: mean saliency from the environment "
                   "token(s) into the position just before the target, over the mean of all other causal flows "
                   "(Wang et al. 2023); band: 95% over seeds.</p><div class=figs>" + "".join(figs) + "</div>")
    lens = results.rows("lens")
    if lens:
        steps = sorted({r["step"] for r in lens})
        layers = sorted({r["layer"] for r in lens})
        import numpy as np

        m = np.full((len(layers), len(steps)), np.nan)
        for i, layer in enumerate(layers):
            for j, s in enumerate(steps):
                v = [r["surprisal"] for r in lens if r["layer"] == layer and r["step"] == s and r.get("surprisal") is not None]
                if v:
                    m[i, j] = float(np.mean(v))
        p = plots.heatmap(m, steps, layers, plot_dir / "lens.png", "tuned lens: target surprisal (match)", "step", "layer", "nats")
        out.append("<h2>Tuned lens</h2><div class=figs>" + img(p) + "</div>")
    out.extend(_head_grids(results, plot_dir, img))
    heads = results.rows("heads", "heads")
    if heads:
        _share_over_training(results, plot_dir, img, out)
    out.extend(_box_heads(results, plot_dir, img, table))
    abl = results.rows("ablation")
    if abl:
        cols = ["run", "step", "head_type", "avg_count", "avg_layer", "intervention_surprisal", "control_surprisal",
                "original_surprisal", "p_value", "stars", "n_items", "n_items_total", "n_fallback_pool", "control_pool", "reason"]
        rules = sorted({str(r.get("gather_rule")) for r in results.records("ablation") if r.get("gather_rule")})
        note = (f"<p class=note>Gather rule: {html.escape(', '.join(rules))} (strip: a row holds &ge; the threshold of the "
                "head's saliency; strip-minus-dot: without its largest cell). Layers are 1-based.</p>") if rules else ""
        out.append("<h2>Head ablation</h2>" + note + table(abl, [c for c in cols if any(r.get(c) is not None for r in abl)]))
    return out


def _box_heads(results, plot_dir: Path, img, table) -> list[str]:
    """Image probes (``boxheads``): a grid of inside-box share per checkpoint (rows = layers,
    columns = heads) and the list of box aggregate heads."""
    import numpy as np

    from vlground.report.writer import _flat

    rows = _flat([r for r in results.rows("heads", "boxheads") if r.get("inside_share") is not None])
    if not rows:
        return []
    out = ["<h2>Box aggregate heads</h2><p class=note>Inside-box share: the share of a head's saliency from image "
           "patches into the position before the object's name that comes from patches inside the object's box "
           "(mean over items). A head is listed as aggregate@t when its share is at least t on at least half the items. "
           "inside_vs_chance: the inside share over the share of image tokens inside the box (1 = chance; compares "
           "models with different numbers of image tokens); artefact_share: the share of its image saliency on image "
           "tokens of outlying feature norm.</p>"]
    figs = []
    for run, step in dict.fromkeys((r["run"], r["step"]) for r in rows):
        these = [r for r in rows if r["run"] == run and r["step"] == step]
        layers = sorted({r["layer"] for r in these})
        heads = sorted({r["head"] for r in these})
        m = np.full((len(layers), len(heads)), np.nan)
        for r in these:
            m[layers.index(r["layer"]), heads.index(r["head"])] = r["inside_share"]
        at = "final" if step is None else f"step {step}"
        safe = f"{run}-{at}".replace("/", "_").replace(" ", "-")
        figs.append(plots.heatmap(m, heads, layers, plot_dir / f"box-heads-{safe}.png", f"{run} ({at}): inside-box share",
                                  "head", "layer", "share"))
    out.append("<div class=figs>" + "".join(img(f) for f in figs) + "</div>")
    agg = sorted((r for r in rows if str(r.get("kind", "")).startswith("aggregate@")),
                 key=lambda r: (r["run"], -1 if r["step"] is None else r["step"], r["layer"], r["head"]))
    cols = ["run", "step", "layer", "head", "kind", "inside_share", "inside_vs_chance", "artefact_share"]
    cols = [c for c in cols if c in rows[0]] + sorted(k for k in rows[0] if k.startswith(("aggregate_frac@", "view_share")))
    out.append(table(agg, cols) if agg else "<p class=note>No head is a box aggregate head on half the items.</p>")
    return out


def _last_per_run(rows: list[dict]) -> list[dict]:
    last: dict[str, dict] = {}
    for r in rows:
        if r["run"] not in last or (r["step"] or 0) >= (last[r["run"]]["step"] or 0):
            last[r["run"]] = r
    return [last[k] for k in sorted(last)]


def _head_grids(results, plot_dir: Path, img) -> list[str]:
    """Every head's mean saliency map (rows = layers, columns = heads) at the last probed
    checkpoint of each run, normalised per head and per model."""
    import torch

    from vlground.mechanism.flow import normalize_maps
    from vlground.mechanism.plots import plot_head_maps

    out = []
    for r in _last_per_run([r for r in results.records("heads") if r.get("map_layers")]):
        arr = results.arrays(r["key"]).get("heads.maps")
        if arr is None:
            continue
        maps = torch.from_numpy(arr)
        safe = str(r["run"]).replace("/", "_")
        figs = []
        for per in ("head", "model"):
            path = plot_dir / f"heads-{safe}-step{r['step']}-per-{per}.png"
            plot_head_maps(normalize_maps(maps, per=per), path, layer_labels=r["map_layers"])
            figs.append(img(path))
        tokens = " ".join(html.escape(t) for t in (r.get("map_tokens") or []))
        out.append(
            f"<h3>Head saliency maps: {html.escape(str(r['run']))} at step {r['step']}</h3>"
            f"<p class=note>Rows = layers, columns = heads; each map: row i, column j = flow from token j into token i, "
            f"mean over the match items of one frame. Left: normalised per head; right: per model. Tokens: {tokens}</p>"
            f"<div class=figs>{''.join(figs)}</div>"
        )
    return out


def _share_over_training(results, plot_dir: Path, img, out: list[str]) -> None:
    """Share of all saliency carried by the gather and aggregate heads identified at each run's
    reference checkpoint, over steps."""
    rows = [r for r in results.records("heads") if r.get("aggregate_share") is not None]
    if len(rows) < 2:
        return
    import numpy as np

    from vlground.report.plots import plt  # Agg backend set there

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for key, color in (("gather_share", "tab:green"), ("aggregate_share", "tab:purple")):
        steps = sorted({r["step"] for r in rows})
        ax.plot(steps, [np.mean([r[key] for r in rows if r["step"] == s]) for s in steps], marker="o", ms=3,
                color=color, label=key.split("_")[0])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of all saliency")
    ax.set_title("saliency carried by gather / aggregate heads", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = plot_dir / "head-shares.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append("<h2>Gather and aggregate heads over training</h2><div class=figs>" + img(path) + "</div>")
