"""Report sections for the mechanistic probes (flow, heads, ablation, lens), when present."""
from __future__ import annotations

import html
from pathlib import Path

from vlground.report import plots


def render(results: dict, plot_dir: Path, img, table) -> list[str]:
    out: list[str] = []
    flow = results.get("flow") or []
    if flow:
        p = plots.layer_curves(flow, "env_flow", plot_dir / "flow.png", "saliency from environment into the target position", "S_env / S_rest")
        out.append("<h2>Information flow over training</h2><div class=figs>" + img(p) + "</div>")
    lens = results.get("lens") or []
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
    for name in sorted(p.name for p in plot_dir.glob("heads-*.png")):
        out.append(f"<h3>{html.escape(name[:-4])}</h3><div class=figs>{img(plot_dir / name)}</div>")
    abl = results.get("ablation") or []
    if abl:
        cols = ["run", "step", "head_type", "avg_count", "avg_layer", "intervention_surprisal", "control_surprisal",
                "original_surprisal", "p_value", "stars"]
        out.append("<h2>Head ablation</h2>" + table(abl, [c for c in cols if any(r.get(c) is not None for r in abl)]))
    return out
