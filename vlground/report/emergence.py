"""Information gain against training tokens: where grounding emerges, per density and architecture.

A sweep's run groups are ``<arch>/<variant>`` (``transformer/childes-drop100``, ``lstm/dense``);
the variant is the corpus (the co-occurrence density of the emergence sweeps). Here the verdict
rows (:func:`vlground.report.verdicts.verdict_table`: effect, 95 % interval, corrected p, label,
detectable effect) are joined with the training tokens each checkpoint had seen
(``tokens_seen`` of its ``checkpoint.json``, written by ``vlground train``), and

* :func:`emergence_rows` gives one row per (group, step) with ``arch, density, tokens``;
* :func:`first_grounded` the first checkpoint of each group whose verdict is "grounded";
* :func:`gain_vs_tokens_plot` one panel per architecture, one line per density, the interval as a
  band, log x-axis (tokens; step 0 has seen none and is left off the axis), the first "grounded"
  checkpoint of each line marked with a star;
* :func:`section` the report section holding both.
"""
from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path

from vlground.numbers import ci, num, signed  # one number format everywhere (key findings, claims, tables)

log = logging.getLogger(__name__)


def split_group(group: str) -> tuple[str, str]:
    """``transformer/childes-drop100`` -> ``("transformer", "childes-drop100")``; a group with no
    ``/`` (a plain probe run) is its own architecture with density ``""``."""
    arch, _, density = str(group).partition("/")
    return arch, density


def checkpoint_tokens(checkpoints: list[dict]) -> dict[tuple[str, int], int]:
    """``{(group, step): tokens seen}`` from the checkpoint rows: their ``tokens_seen`` field, else
    the ``checkpoint.json`` in the checkpoint folder (``path``); groups and steps whose tokens are
    unknown are left out."""
    out: dict[tuple[str, int], int] = {}
    for c in checkpoints:
        step = c.get("step")
        if step is None or (isinstance(step, float) and math.isnan(step)):
            continue
        key = (str(c.get("group", c.get("run"))), int(step))
        if key in out:
            continue
        tokens = c.get("tokens_seen")
        if tokens is None and c.get("path"):
            f = Path(str(c["path"])) / "checkpoint.json"
            try:
                tokens = json.loads(f.read_text(encoding="utf-8")).get("tokens_seen")
            except (OSError, json.JSONDecodeError):
                tokens = None
        if tokens is not None:
            out[key] = int(tokens)
    return out


def emergence_rows(checkpoints: list[dict], verdicts: list[dict]) -> list[dict]:
    """Verdict rows with ``arch``, ``density`` and ``tokens`` (None when unknown), in group then
    step order; the final-model rows (step None) are left out."""
    tokens = checkpoint_tokens(checkpoints)
    rows = []
    for v in verdicts:
        if v.get("step") is None:
            continue
        arch, density = split_group(v["group"])
        rows.append({**v, "arch": arch, "density": density, "tokens": tokens.get((str(v["group"]), int(v["step"])))})
    return sorted(rows, key=lambda r: (str(r["group"]), r["step"]))


def first_grounded(rows: list[dict]) -> dict[str, dict | None]:
    """``{group: the first row (lowest step) whose verdict is "grounded", or None}``."""
    out: dict[str, dict | None] = {}
    for r in sorted(rows, key=lambda r: (str(r["group"]), r["step"])):
        out.setdefault(r["group"], None)
        if out[r["group"]] is None and r.get("verdict") == "grounded":
            out[r["group"]] = r
    return out


def fmt_tokens(n: float | None) -> str:
    """``2.5M``, ``131k``, ``268M``, ``1.2G`` (``?`` when unknown)."""
    if n is None or not math.isfinite(float(n)):
        return "?"
    n = float(n)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def gain_vs_tokens_plot(rows: list[dict], path: Path, min_effect: float) -> Path | None:
    """One panel per architecture, one line per density: information gain (nats) with its 95 %
    interval as a band against training tokens (log axis); the first "grounded" checkpoint of a
    line is a star. None when no row has tokens > 0."""
    from vlground.report import plots

    plt = plots.plt
    usable = [r for r in rows if r.get("tokens") and r["tokens"] > 0 and r.get("effect") is not None
              and math.isfinite(float(r["effect"]))]
    if not usable:
        return None
    archs = sorted({r["arch"] for r in usable})
    densities = sorted({r["density"] for r in usable})
    cmap = plt.get_cmap("viridis")
    colour = {d: cmap(i / max(len(densities) - 1, 1) * 0.9) for i, d in enumerate(densities)}
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 3.6), sharey=True, squeeze=False)
    firsts = first_grounded(rows)
    values = []
    for ax, arch in zip(axes[0], archs):
        for d in densities:
            rs = sorted((r for r in usable if r["arch"] == arch and r["density"] == d), key=lambda r: r["tokens"])
            if not rs:
                continue
            x = [r["tokens"] for r in rs]
            y = [float(r["effect"]) for r in rs]
            lo = [float(r["ci_low"]) if r.get("ci_low") is not None else math.nan for r in rs]
            hi = [float(r["ci_high"]) if r.get("ci_high") is not None else math.nan for r in rs]
            values += y + [v for v in lo + hi if math.isfinite(v)]
            ax.plot(x, y, marker="o", ms=3, lw=1.2, color=colour[d], label=d or arch)
            ax.fill_between(x, lo, hi, color=colour[d], alpha=0.18, lw=0)
            first = firsts.get(rs[0]["group"])
            if first is not None and first.get("tokens"):
                ax.plot([first["tokens"]], [float(first["effect"])], marker="*", ms=13, color=colour[d],
                        markeredgecolor="black", lw=0, zorder=5)
        ax.set_xscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(arch, fontsize=10)
        ax.grid(alpha=0.3)
    plots.effect_axis(axes[0][0], values, min_effect)
    axes[0][0].set_ylabel("information gain (nats, 95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    star = plt.Line2D([], [], marker="*", ms=11, color="white", markeredgecolor="black", lw=0, label="first 'grounded'")
    axes[0][-1].legend(handles + [star], labels + ["first 'grounded'"], fontsize=7, loc="upper left")
    return plots._save(fig, path)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per group: the first "grounded" checkpoint (tokens, effect, interval) or "not within N
    tokens" with the last checkpoint's detectable effect (the power statement)."""
    out = []
    firsts = first_grounded(rows)
    for group in sorted(firsts):
        rs = [r for r in rows if r["group"] == group]
        last = rs[-1]
        first = firsts[group]
        arch, density = split_group(group)
        if first is not None:
            found = (f"grounded from {fmt_tokens(first['tokens'])} tokens (step {first['step']}): "
                     f"{signed(first['effect'])} nats {ci(first['ci_low'], first['ci_high'])}")
        else:
            found = f"not within {fmt_tokens(last['tokens'])} tokens (step {last['step']}): {last.get('verdict')}"
            if last.get("power_note"):
                found += f"; {last['power_note']}"
        out.append({"architecture": arch, "density": density, "checkpoints": len(rs), "last tokens": fmt_tokens(last["tokens"]),
                    "gain at the last checkpoint": f"{signed(last['effect'])} {ci(last['ci_low'], last['ci_high'])}",
                    "emergence": found})
    return out


def section(res, verdicts: list[dict], plot_dir: Path, min_effect: float):
    """The report section "Information gain against training tokens", or None without a
    trajectory whose tokens are known."""
    from vlground.report.html import Section, img, table

    rows = emergence_rows(res.checkpoints, verdicts)
    if not rows or not any(r.get("tokens") for r in rows):
        return None
    fig = gain_vs_tokens_plot(rows, Path(plot_dir) / "gain-vs-tokens.png", min_effect)
    if fig is None:
        return None
    body = ("<p class=note>Information gain (mismatch - match surprisal, nats) with its 95% interval (the verdict's: "
            "pooled over seeds) against the training tokens each checkpoint had seen; one panel per architecture, one line "
            "per corpus (the co-occurrence density of the emergence sweeps), log x-axis (step 0 is left off). A star marks "
            f"the first checkpoint whose verdict is \"grounded\"; the grey zone is below the minimum effect ({min_effect:g} "
            "nats). A line that never reaches it reads \"not within N tokens\", with what the run could have detected.</p>"
            f"<div class=figs>{img(fig, 'information gain against training tokens', wide=True)}</div>"
            + table(summary_rows(rows)))
    log.debug("emergence section: %d rows", len(rows))
    return Section("Information gain against training tokens", body)


def markdown_table(rows: list[dict]) -> str:
    """The emergence rows as a Markdown table (density x tokens -> gain [CI], verdict, detectable)."""
    lines = ["| architecture | density | step | tokens | information gain [95% CI] (nats) | verdict | detectable (80% power) |",
             "|---|---|---:|---:|---|---|---:|"]
    for r in rows:
        det = r.get("detectable")
        lines.append(f"| {r['arch']} | {r['density']} | {r['step']} | {fmt_tokens(r['tokens'])} | "
                     f"{signed(r['effect'])} {ci(r['ci_low'], r['ci_high'])} | {html.escape(str(r['verdict']))} | "
                     + (f"{num(det)} |" if det is not None and math.isfinite(det) else "n/a |"))
    return "\n".join(lines)
