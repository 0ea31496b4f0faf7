"""The report's sections, in pipeline order. Each function reads a :class:`vlground.results.Results`
(through its DataFrames), writes its PNGs into ``plots`` and returns a :class:`Section`, or None
when there is nothing to show (a section is never empty)."""
from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np

from vlground import numbers, stats
from vlground.report import plots
from vlground.report.html import Section, img, table


def _safe(text) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def _at(step) -> str:
    return "the final model" if step is None or (isinstance(step, float) and math.isnan(step)) else f"step {int(step)}"


def _seeded(df):
    """Seed None (a pretrained model) as -1 so group-bys keep it."""
    return df.assign(seed=df["seed"].fillna(-1)) if "seed" in df else df.assign(seed=-1)


def _trajectory(df) -> bool:
    return "step" in df and df["step"].dropna().nunique() > 1


def training(res, plot_dir: Path) -> Section | None:
    logs = {run: recs for run, recs in res.train_logs().items() if any("loss" in r or "val_loss" in r for r in recs)}
    if not logs:
        return None
    p = plots.training_curves(logs, plot_dir / "training-curves.png")
    rows = []
    for run, recs in sorted(logs.items()):
        tr = [r for r in recs if r.get("loss") is not None]
        va = [r for r in recs if r.get("val_loss") is not None]
        rows.append({"run": run, "steps": tr[-1]["step"] if tr else None, "last loss": tr[-1]["loss"] if tr else None,
                     "last val loss": va[-1]["val_loss"] if va else None,
                     "tokens/s": tr[-1].get("tokens_per_s") if tr else None, "grad norm": tr[-1].get("grad_norm") if tr else None})
    return Section("Training curves", "<p class=note>From each run's <code>train_log.jsonl</code>: mean training loss per "
                   "log window (solid) and held-out validation loss at every checkpoint (dashed, markers).</p>"
                   f"<div class=figs>{img(p, 'training curves', wide=True)}</div>" + table(rows))


def behaviour(res, verdicts: list[dict], plot_dir: Path, min_effect: float) -> Section | None:
    ck = res.frame("checkpoints")
    if ck.empty or "match_surprisal" not in ck:
        return None
    ck = _seeded(ck)
    children = []
    for g, gdf in ck.groupby("group", sort=True):
        figs = []
        if _trajectory(gdf):
            figs.append(plots.surprisal_plot(gdf, g, plot_dir / f"{_safe(g)}-surprisal.png"))
            figs.append(plots.info_gain_plot(gdf, g, plot_dir / f"{_safe(g)}-info-gain.png", min_effect))
            if "reverse_match_surprisal" in gdf and gdf["reverse_match_surprisal"].notna().any():
                figs.append(plots.surprisal_plot(gdf, g, plot_dir / f"{_safe(g)}-reverse-surprisal.png", reverse=True))
                figs.append(plots.info_gain_plot(gdf, g, plot_dir / f"{_safe(g)}-reverse-info-gain.png", min_effect, reverse=True))
        vrows = [v for v in verdicts if v["group"] == g]
        methods = sorted({str(v["method"]) for v in vrows})
        shown = [{"step": _at(v["step"]) if v["step"] is None else v["step"], "seeds": v["n_seeds"], "pairs": v["n_pairs"],
                  "information gain (nats)": v["effect"], "95% CI": numbers.ci(v["ci_low"], v["ci_high"]),
                  f"{v['correction']}-corrected p".replace("none-corrected p", "p (uncorrected)"): v["p_corrected"],
                  "verdict": v["verdict"], "detectable (nats)": v.get("detectable")} for v in vrows]
        vt = table(shown, note=html.escape(f"Interval and p: {'; '.join(methods)}. Detectable: the smallest gain this "
                                           "run's precision would have found (80% power; vlground.power).")) if vrows else ""
        summ = [r for r in _summary(gdf)]
        body = (f"<div class=figs>{''.join(img(f) for f in figs)}</div>" if figs else
                f"<p class=note>One probed checkpoint ({_at(gdf['step'].iloc[0])}): no trajectory to plot.</p>")
        body += "<p class=note>Verdict per step (effect = information gain in nats, from the items table):</p>" + vt if vt else ""
        body += "<p class=note>Mean over seeds (band: min-max over seeds):</p>" + table(summ)
        children.append(Section(f"Behaviour: {g}", body))
    intro = ("<p class=note>Surprisal is in nats: -log p(target | context), summed over a word's sub-tokens where a "
             "tokenizer splits it (teacher forcing: each sub-token is scored with the earlier ones in the input). "
             "Information gain = mismatch surprisal - match surprisal. Plots: mean over seeds with markers at the "
             "probed steps, the min-max range over seeds as the band and each seed as a thin line (up to 5 seeds); "
             f"the grey zone is below the minimum effect of interest ({min_effect:g} nats), so an axis never zooms "
             "into an effect too small to matter.</p>")
    return Section("Behaviour: match vs mismatch", intro, children)


def _summary(gdf) -> list[dict]:
    fields = [f for f in ("match_surprisal", "mismatch_surprisal", "info_gain", "r2_cooc", "reverse_info_gain") if f in gdf]
    out = []
    for step, sdf in gdf.groupby(gdf["step"].fillna(-1), sort=True):
        row = {"step": _at(None) if step == -1 else int(step), "n_seeds": sdf["seed"].nunique()}
        for f in fields:
            m, lo, hi = stats.seed_band(sdf[f].to_numpy(dtype=float))
            row[f] = m
            if sdf["seed"].nunique() > 1:
                row[f + " min"], row[f + " max"] = lo, hi
        out.append(row)
    return out


def r_squared(res, plot_dir: Path) -> Section | None:
    ck = res.frame("checkpoints")
    if ck.empty or "r2_cooc" not in ck or ck["r2_cooc"].isna().all():
        return None
    ck = _seeded(ck)
    figs, rows = [], []
    for g, gdf in ck.groupby("group", sort=True):
        if _trajectory(gdf):
            fig, ax = plots.plt.subplots(figsize=(5.5, 3.4))
            steps = plots.seed_series(ax, gdf, "r2_cooc", plots.COLORS["r2"], "R²")
            ax.set_ylim(0, 1)
            ax.set_ylabel("R² (info gain ~ co-occurrence)")
            ax.set_title(f"{g}: R² of per-word information gain on co-occurrence", fontsize=10)
            if ax.get_legend_handles_labels()[0]:  # an all-undefined R² draws nothing to label
                ax.legend(fontsize=7)
            plots._steps_axis(ax, steps)
            figs.append(plots._save(fig, plot_dir / f"{_safe(g)}-r2.png"))
        last = gdf[gdf["step"].fillna(math.inf) == gdf["step"].fillna(math.inf).max()]
        rows.append({"group": g, "at": _at(last["step"].iloc[0]), "R² (mean over seeds)": float(last["r2_cooc"].mean())})
    body = ("<p class=note>R²: linear regression of per-word information gain on the word's cumulative co-occurrence "
            "(w&lt;ENV&gt; and w&lt;LAN&gt; in one chunk) up to the step. A high R² means the gain tracks co-occurrence "
            "counts.</p>" + (f"<div class=figs>{''.join(img(f) for f in figs)}</div>" if figs else "") + table(rows))
    return Section("R² against co-occurrence", body)


def flow(res, plot_dir: Path) -> Section | None:
    df = res.frame("flow")
    if df.empty or "env_flow" not in df or df["env_flow"].isna().all():
        return None
    df = _seeded(df)
    figs = []
    for g, gdf in df.groupby("group", sort=True):
        if _trajectory(gdf):
            figs.append(plots.layer_curves(gdf, "env_flow", plot_dir / f"{_safe(g)}-flow.png",
                                           f"{g}: environment -> target-position saliency", "S_env / S_rest"))
        else:  # one checkpoint: the ratio per layer
            fig, ax = plots.plt.subplots(figsize=(5.5, 3.2))
            per = gdf.groupby("layer")["env_flow"].mean()
            ax.plot(per.index, per.values, marker="o", ls=":", color=plots.OKABE_ITO[0])
            ax.set_xlabel("layer")
            ax.set_xticks([int(x) for x in per.index])
            ax.set_ylabel("S_env / S_rest")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{g} ({_at(gdf['step'].iloc[0])})\nenvironment -> target-position saliency", fontsize=10)
            ax.grid(alpha=0.3)
            figs.append(plots._save(fig, plot_dir / f"{_safe(g)}-flow.png"))
    body = ("<p class=note>Per layer (1-based): mean saliency from the environment token(s) into the position just before the "
            "target, over the mean of all other causal flows (Wang et al. 2023). Markers are the probed steps; band: min-max "
            f"over seeds.</p><div class=figs>{''.join(img(f) for f in figs)}</div>")
    return Section("Information flow", body)


def lens(res, plot_dir: Path) -> Section | None:
    df = res.frame("lens")
    if df.empty or "surprisal" not in df:
        return None
    figs = []
    top = float(np.nanmax(df["surprisal"].to_numpy(dtype=float)))
    vmax = float(np.ceil(top)) if np.isfinite(top) and top > 0 else None  # one fixed scale: 0 to the largest, every group
    for g, gdf in df.groupby("group", sort=True):
        steps = sorted(gdf["step"].fillna(-1).unique())
        layers = sorted(gdf["layer"].unique())
        m = np.full((len(layers), len(steps)), np.nan)
        for (layer, step), v in gdf.assign(step=gdf["step"].fillna(-1)).groupby(["layer", "step"])["surprisal"].mean().items():
            m[layers.index(layer), steps.index(step)] = v
        figs.append(plots.heatmap(m, ["final" if s == -1 else int(s) for s in steps], [int(x) for x in layers],
                                  plot_dir / f"{_safe(g)}-lens.png", f"{g}\ntuned lens: target surprisal (match)",
                                  "step", "layer (0 = embeddings)", "nats (fixed scale, all groups)", cmap="magma_r",
                                  vmin=0, vmax=vmax))
    body = ("<p class=note>Target surprisal read through a tuned lens at each layer (0 = embeddings, k = after block k), "
            f"mean over match items and seeds. Every lens plot uses one colour scale, 0 to {vmax or 'the largest value'} nats, "
            f"so checkpoints and groups compare.</p><div class=figs>{''.join(img(f) for f in figs)}</div>")
    return Section("Tuned lens", body)


def heads(res, plot_dir: Path) -> Section | None:
    recs = [r for r in res.records("heads") if r.get("map_layers")]
    rows = res.frame("heads", "heads")
    if not recs and rows.empty:
        return None
    children = []
    last: dict = {}
    for r in recs:
        if r["run"] not in last or (r["step"] or 0) >= (last[r["run"]]["step"] or 0):
            last[r["run"]] = r
    colors = {"gather": (plots.COLORS["gather"], "gather head"), "aggregate": (plots.COLORS["aggregate"], "aggregate head"),
              "both": (plots.OKABE_ITO[1], "gather and aggregate")}
    for run in sorted(last):
        r = last[run]
        maps = res.arrays(r["key"]).get("heads.maps")
        if maps is None:
            continue
        peak = np.abs(maps).max(axis=(-1, -2), keepdims=True)
        norm = np.abs(maps) / np.where(peak > 0, peak, 1)
        layer_nums = list(r["map_layers"])
        marks = {}
        if not rows.empty:
            here = rows[rows["key"] == r["key"]]
            for _, h in here.iterrows():
                if h.get("kind") in colors and int(h["layer"]) in layer_nums:
                    col = int(h["head_index"]) if "head_index" in h and h["head_index"] == h["head_index"] and h["head_index"] >= 0 \
                        else int(h["head"])  # results written before heads were numbered from 1 carry only a 0-based head
                    marks[(layer_nums.index(int(h["layer"])), col)] = colors[h["kind"]]
        p = plots.head_grid(norm, list(r.get("map_tokens") or []), layer_nums, plot_dir / f"heads-{_safe(run)}.png",
                            f"{run} at {_at(r['step'])}: saliency maps of every head (each normalised to its maximum)", marks)
        n_id = len(marks)
        children.append(Section(f"Head saliency maps: {run}", "<p class=note>Rows = layers, columns = heads (numbers as "
                                "in the heads table); each map: row i, column j = saliency flow from token j into token i, mean "
                                f"over the match items of one frame. Outlined: the {n_id} head(s) identified as gather / aggregate "
                                f"at {html.escape(str(r.get('identified_at', 'the final checkpoint')))}.</p>"
                                f"<div class=figs>{img(p, f'head grid {run}', wide=True)}</div>"))
    body = ("<p class=note>Gather heads move the environment's information into one position; aggregate heads move it "
            "into the position before the target (definitions in docs/mechanism.md).</p>")
    share = [r for r in res.records("heads") if r.get("aggregate_share") is not None]
    if share and len({r["step"] for r in share}) > 1:
        import pandas as pd

        df = _seeded(pd.DataFrame(share)).rename(columns={"gather_share": "gather_saliency_share",
                                                           "aggregate_share": "aggregate_saliency_share"})
        body += f"<div class=figs>{img(plots.shares_over_training(df, plot_dir / 'head-shares.png'))}</div>"
    if not rows.empty and "kind" in rows:
        ident = rows[rows["kind"].isin(["gather", "aggregate", "both"])]
        cols = ["run", "step", "layer", "head", "kind", "gather_frac", "aggregate_frac", "saliency_share", "env_share"]
        last_keys = {r["key"] for r in last.values()}
        body += "<p class=note>Identified heads at each run's last probed step:</p>" + table(
            ident[ident["key"].isin(last_keys)].to_dict("records") if last_keys else ident.to_dict("records"), cols)
    return Section("Attention heads", body, children)


def ablation(res) -> Section | None:
    rows = res.rows("ablation")
    if not rows:
        return None
    cols = ["run", "step", "head_type", "avg_count", "avg_layer", "intervention_surprisal", "control_surprisal",
            "original_surprisal", "p_value", "stars", "n_items", "n_items_total", "n_fallback_pool", "control_pool", "reason"]
    rules = sorted({str(r.get("gather_rule")) for r in res.records("ablation") if r.get("gather_rule")})
    rule = (f" Gather rule: {html.escape(', '.join(rules))} (strip-off-target: a row other than the predicted position's "
            "holds &ge; the threshold of the head's saliency; strip: any row does; strip-minus-dot: a row without its "
            "largest cell; docs/mechanism.md).") if rules else ""
    body = ("<p class=note>Zeroing the heads of a type against as many random control heads; p: one-sided paired Wilcoxon, "
            f"intervention &gt; control. Layers are 1-based.{rule}</p>" + table(rows, cols))
    return Section("Head ablation", body)


def vision(res, plot_dir: Path) -> Section | None:
    rows = [dict(r) for r in res.rows("heads", "boxheads") if r.get("inside_share") is not None]
    if not rows:
        return None
    for r in rows:
        for k, v in list(r.items()):
            if isinstance(v, dict):
                r.update({f"{k}@{kk}": vv for kk, vv in v.items()})
                del r[k]
    figs = []
    for (run, step) in dict.fromkeys((r["run"], r["step"]) for r in rows):
        these = [r for r in rows if r["run"] == run and r["step"] == step]
        layers = sorted({r["layer"] for r in these})
        hs = sorted({r["head"] for r in these})
        m = np.full((len(layers), len(hs)), np.nan)
        marks = {}
        for r in these:
            i, j = layers.index(r["layer"]), hs.index(r["head"])
            m[i, j] = r["inside_share"]
            if str(r.get("kind", "")).startswith("aggregate@"):
                marks[(i, j)] = "cyan"
        figs.append(plots.heatmap(m, hs, layers, plot_dir / f"box-heads-{_safe(run)}-{_safe(_at(step))}.png",
                                  f"{run} ({_at(step)})\ninside-box share (outlined: box aggregate heads)",
                                  "head", "layer", "inside-box share", marks, vmin=0, vmax=1))
    overlays = _overlays(res, plot_dir)
    agg = sorted((r for r in rows if str(r.get("kind", "")).startswith("aggregate@")),
                 key=lambda r: (r["run"], -1 if r["step"] is None else r["step"], r["layer"], r["head"]))
    cols = ["run", "step", "layer", "head", "kind", "inside_share", "inside_vs_chance", "artefact_share", "saliency_share"]
    cols = [c for c in cols if c in rows[0]] + sorted(k for k in rows[0] if k.startswith(("aggregate_frac@", "view_share")))
    body = ("<p class=note>Inside-box share: the share of a head's saliency from image patches into the position before the "
            "object's name that comes from patches inside the object's box (mean over items). A head is listed as "
            "aggregate@t when its share is at least t on at least half the items. inside_vs_chance: the inside share over "
            "the share of image tokens inside the box (1 = chance; compares models with different numbers of image tokens); "
            "artefact_share: the share of its image saliency on image tokens of outlying feature norm.</p>"
            f"<div class=figs>{''.join(img(f) for f in figs + overlays)}</div>"
            + (table(agg, cols) if agg else "<p class=note>No head is a box aggregate head on half the items.</p>"))
    return Section("Box aggregate heads", body)


def _overlays(res, plot_dir: Path) -> list[Path]:
    """The image the model saw, the object's box (its image tokens) and the per-patch saliency of
    the strongest box aggregate heads, match and mismatch side by side (``boxheads`` arrays)."""
    out = []
    for r in res.records("boxheads"):
        if not r.get("overlay_heads"):
            continue
        arr = res.arrays(r["key"])
        panels = []
        for side in ("match", "mismatch"):
            patches, mask, image = (arr.get(f"boxheads.overlay_{side}{x}") for x in ("", "_mask", "_image"))
            if patches is None or image is None:
                continue
            box = None
            if mask is not None and mask.any():
                gh, gw = mask.shape
                rr, cc = np.nonzero(mask)
                h, w = image.shape[:2]
                box = (cc.min() * w / gw, rr.min() * h / gh, (cc.max() + 1 - cc.min()) * w / gw, (rr.max() + 1 - rr.min()) * h / gh)
            panels.append({"image": image, "box": box, "patches": patches, "label": f"{side} image ('{r.get('overlay_word', '')}')"})
        if panels:
            out.append(plots.box_overlay(panels, plot_dir / f"box-overlay-{_safe(r['key'])}.png",
                                         f"{r['run']} ({_at(r['step'])}): saliency into the name, heads {r['overlay_heads']} "
                                         "(cyan: the box's image tokens)"))
    return out


def per_checkpoint(res) -> Section | None:
    recs = res.checkpoint_rows()
    if not recs:
        return None
    cols = ["run", "seed", "step", "n_items", "match_surprisal", "mismatch_surprisal", "info_gain", "word_p_value", "item_p_value",
            "r2_cooc", "reverse_match_surprisal", "reverse_mismatch_surprisal", "reverse_info_gain", "reverse_word_p_value"]  # seconds: in checkpoints.csv
    words = res.rows("words")
    last: dict = {}
    for r in recs:
        if r["step"] is None or r["run"] not in last or (last[r["run"]]["step"] is not None and r["step"] > last[r["run"]]["step"]):
            last[r["run"]] = r
    wcols = ["word", "match", "mismatch", "info_gain", "cooc", "reverse_match", "reverse_mismatch", "reverse_info_gain"]
    children = [Section(f"Per word: {run} at {_at(r['step'])}", table([w for w in words if w["key"] == r["key"]], wcols))
                for run, r in sorted(last.items()) if any(w["key"] == r["key"] for w in words)]
    body = ("<p class=note>word_p_value: one-sided t-test over the per-word mean gains of one checkpoint (words are the "
            "independent units), uncorrected; item_p_value: one-sided Wilcoxon signed-rank over item pairs, <b>item-level</b> "
            "(treats the pairs of one word as independent, so it is too small; shown for comparison only). The verdicts "
            "above use the corrected, clustered p-values.</p>" + table(recs, cols))
    return Section("Every checkpoint", body, children)
