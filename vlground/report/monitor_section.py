"""The grounding monitor's section of a report: HTML from a ``monitor.json`` dict (no model, no torch).

:func:`render_monitor_section` returns one ``<section>`` (evaluation table with CIs, ROC curves against
the baselines, score distributions of grounded and hallucinated words, example generations with the
flagged words highlighted next to the photo with its annotated boxes, mitigation effect, notes);
images are inlined PNGs so the HTML stands alone. The report writer includes it with one call::

    sections.extend(monitor_section.sections_for(out))   # Section objects of every OUT/monitor*/monitor.json

:func:`write_monitor_report` writes it as ``report.html`` of a monitor output folder.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

_COLS = (("detector", "detector"), ("auroc", "AUROC"), ("auroc_ci", "95% CI"), ("auprc", "AUPRC"), ("auprc_ci", "95% CI"),
         ("auprc_chance", "AUPRC chance"), ("diff", "AUROC identified minus this [95% CI]"))


def _f(v, nd: int = 3) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in _COLS)
    body = []
    for r in rows:
        cells = {
            "detector": html.escape(r["detector"]) + (f"<br><small>{html.escape(r.get('description', ''))}</small>"),
            "auroc": _f(r["auroc"]), "auroc_ci": f"[{_f(r['auroc_low'])}, {_f(r['auroc_high'])}]",
            "auprc": _f(r["auprc"]), "auprc_ci": f"[{_f(r['auprc_low'])}, {_f(r['auprc_high'])}]",
            "auprc_chance": _f(r["auprc_chance"]),
            "diff": "–" if r.get("auroc_diff_vs_reference") is None else
            f"{r['auroc_diff_vs_reference']:+.3f} [{_f(r['auroc_diff_low'])}, {_f(r['auroc_diff_high'])}]",
        }
        body.append("<tr>" + "".join(f"<td>{cells[c]}</td>" for c, _ in _COLS) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _roc_plot(roc: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, c in roc.items():
        ax.plot(c["fpr"], c["tpr"], label=name, lw=2 if "identified" in name else 1)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate (grounded words flagged)")
    ax.set_ylabel("true positive rate (hallucinated words flagged)")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _dist_plot(scores: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for key, colour in (("grounded", "#0072B2"), ("hallucinated", "#D55E00")):  # Okabe-Ito: colour-blind safe
        v = scores.get(key) or []
        if v:
            ax.hist(v, bins=20, alpha=0.5, color=colour, label=f"{key} (n={len(v)})", density=True)
    ax.set_xlabel("grounding score (identified heads)")
    ax.set_ylabel("density")
    if any(scores.get(k) for k in ("grounded", "hallucinated")):
        ax.legend(fontsize=8)
    return _png(fig)


def _photo(example: dict) -> str:
    """The example's photo with its annotated boxes (green: a category named correctly, red: named but absent)."""
    from PIL import Image, ImageDraw

    try:
        with Image.open(example["image"]) as im:
            img = im.convert("RGB")
    except OSError:
        return ""
    scale = max(1.0, 240 / max(img.size))
    img = img.resize((int(img.width * scale), int(img.height * scale)))
    draw = ImageDraw.Draw(img)
    named = {w["category"] for w in example["words"]}
    for cat, (x, y, w, h) in example.get("boxes", []):
        colour = (40, 200, 60) if cat in named else (230, 230, 230)
        draw.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=colour, width=2)
        draw.text((x * scale + 2, y * scale + 1), cat, fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _examples(examples: list[dict], threshold: float | None) -> str:
    out = []
    for ex in examples:
        words = []
        for w in ex["words"]:
            flagged = threshold is not None and w["score"] is not None and w["score"] < threshold
            style = "background:#fdd" if w["label"] else "background:#dfd"
            mark = " &#9873;" if flagged else ""
            words.append(f'<span style="{style}">{html.escape(w["word"])} ({_f(w["score"])}){mark}</span>')
        out.append(f"<div class=example>{_photo(ex)}<p><b>{html.escape(ex.get('text') or '')}</b><br>"
                   f"{' '.join(words)}</p></div>")
    return "".join(out)


def render_monitor_body(result: dict) -> str:
    """The body of the monitor's section for a monitor result (the dict ``vlground monitor`` writes as monitor.json)."""
    heads = result.get("heads", {})
    hl = ", ".join(h.get("label") or f"L{h['layer']}.H{h['head']}" for h in heads.get("heads", []))
    mit = result.get("mitigation")
    threshold = mit["threshold"] if mit else (result.get("settings", {}).get("task", {}) or {}).get("threshold")
    level = "" if heads.get("level") is None else f", aggregate@{heads['level']:g}"
    parts = [
        f"<p>{result.get('n_words', 0)} labelled words, {result.get('n_hallucinated', 0)} hallucinated / wrong. "
        f"Heads read (1-based layers): {html.escape(hl)} (from {html.escape(str(heads.get('source', '')))}"
        f"{level}). "
        "A detector's AUROC is for flagging hallucinated words, its direction fixed in advance; CIs are "
        "percentile bootstrap over images.</p>",
        _table(result.get("evaluation", [])),
    ]
    beaten = result.get("random_sets_at_least_as_good")
    if beaten is not None:
        parts.append(f"<p>Share of random head sets (same size) whose AUROC is at least the identified heads': {beaten:.2f}.</p>")
    if result.get("roc"):
        parts.append(_roc_plot(result["roc"]))
    if result.get("scores"):
        parts.append(_dist_plot(result["scores"]))
    outcome = result.get("outcome") or {}
    parts.append("<p>Task outcome: " + html.escape(", ".join(f"{k} {_f(v) if isinstance(v, float) else v}" for k, v in outcome.items())) + "</p>")
    if mit:
        after = ", ".join(f"{k} {_f(v) if isinstance(v, float) else v}" for k, v in mit["after"].items())
        parts.append(f"<p>Mitigation (threshold {_f(mit['threshold'])}, {mit['threshold_rule']}; penalty {mit['penalty']} nats; "
                     f"{mit['penalised_steps']} decoding steps penalised): after: {html.escape(after)}</p>")
    if result.get("examples"):
        parts.append("<h3>Examples</h3><p>Green: grounded word, red: hallucinated; the score follows each word"
                     + (", &#9873; = below the mitigation threshold" if threshold is not None else "") + ".</p>")
        parts.append(_examples(result["examples"], threshold))
    if result.get("notes"):
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"]) + "</ul>")
    return "\n".join(parts)


def monitor_title(result: dict) -> str:
    return f"Grounding monitor: task {result.get('task', '?')}"


def render_monitor_section(result: dict) -> str:
    """The monitor's section as standalone HTML (``<section>`` with its heading)."""
    return (f"<section id=monitor><h2>{html.escape(monitor_title(result))}</h2>\n"
            + render_monitor_body(result) + "\n</section>")


def sections_for(out: Path) -> list:
    """Report sections (:class:`vlground.report.html.Section`) of the monitor outputs kept inside a probe
    output folder (``OUT/monitor*/monitor.json``), for the probe report."""
    import json

    from vlground.report.html import Section

    found = []
    for f in sorted(Path(out).glob("monitor*/monitor.json")):
        try:
            result = json.loads(f.read_text(encoding="utf-8"))
            found.append(Section(f"{monitor_title(result)} ({f.parent.name})", render_monitor_body(result)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.append(Section(f"Grounding monitor ({f.parent.name})",
                                 f"<p class=note>{html.escape(str(f))}: not a readable monitor result ({html.escape(type(exc).__name__)})</p>"))
    return found


def write_monitor_report(out: Path, result: dict) -> Path:
    """``out/report.html`` holding the monitor section alone."""
    path = Path(out) / "report.html"
    page = ("<!doctype html><html><head><meta charset=utf-8><title>vlground monitor</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}.example{display:flex;gap:12px;align-items:flex-start}"
            "</style></head><body>" + render_monitor_section(result) + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
