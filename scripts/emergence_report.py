"""Probe training runs along their checkpoints and write ``docs/emergence.md``: where grounding emerges.

    OMP_NUM_THREADS=1 python scripts/emergence_report.py \\
        --run transformer/childes/seed-0=/work/emergence/runs/transformer-childes \\
        --run transformer/dense/seed-0=/work/emergence/runs/transformer-dense \\
        --corpus childes=/work/emergence/childes --corpus dense=/work/emergence/dense \\
        --work /work/emergence/probe --doc docs/emergence.md

1. ``vlground probe --probes behaviour --checkpoints all`` on each run (``--work/probes/<run>``;
   the probe's per-checkpoint cache makes a rerun on a run that has grown probe only the new
   checkpoints);
2. with ``--mech``, saliency + heads (+ the tuned lens with ``--lens``) at each run's last checkpoint
   (``--work/mech/<run>``);
3. the behaviour outputs put together as one sweep report (``--work/report``: run ids
   ``<arch>/<density>/seed-<k>``, so groups are ``<arch>/<density>``), with the information gain
   against training tokens (vlground.report.emergence);
4. ``docs/emergence.md``: the table density x tokens -> gain [CI], verdict and detectable effect,
   the first "grounded" checkpoint per group (or "not within N tokens" with the power statement),
   the R² trajectory, training / validation loss (overfitting check), head-type shares at the last
   checkpoint, measured tokens/s and what the grids cost, and the commands. The plots are copied
   next to the document (``emergence-*.png``).

Run ids are ``ARCH/DENSITY/seed-K=RUN_DIR``; ``--corpus DENSITY=CORPUS_DIR`` adds the corpus's
measured co-occurrence shares (all words and object words) to the document.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("emergence_report")


def probe(run_dir: Path, out: Path, probes: str, checkpoints: str, mechanistic: str = "all", extra: list[str] | None = None) -> float:
    """``vlground probe`` in a subprocess (one thread); returns its wall seconds. (``mechanistic``
    is part of the probe's settings hash: keep it fixed for a folder, or its cache is refused.)"""
    exe = Path(sys.executable).with_name("vlground")
    argv = [str(exe) if exe.exists() else "vlground", "probe", "--adapter", "childes", "--run", str(run_dir), "--out", str(out),
            "--probes", probes, "--checkpoints", checkpoints, "--mechanistic-checkpoints", mechanistic, "--no-report", *(extra or [])]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"emergence_report: error: probe of {run_dir} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def train_log(run_dir: Path) -> list[dict]:
    out = []
    f = run_dir / "train_log.jsonl"
    for line in f.read_text(encoding="utf-8").splitlines() if f.is_file() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def corpus_shares(corpus: Path) -> dict:
    """Share of chunks with a co-occurring pair: all pairs, and object-word pairs (the generator's OBJECTS)."""
    import numpy as np

    from vlground.corpus.format import Corpus
    from vlground.datasets.chat_generator import OBJECTS

    c = Corpus.load(corpus)
    m = c.cooc.tocsr()
    words = list(c.pairs) if hasattr(c.pairs, "keys") else [p["word"] if isinstance(p, dict) else p for p in c.pairs]
    obj = np.array([w in OBJECTS for w in words])
    st = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))
    return {"chunks": int(m.shape[0]), "tokens": int(st.get("tokens", 0)), "files": int(st.get("files", 0)),
            "all_share": float((np.diff(m.indptr) > 0).mean()),
            "object_share": float((np.asarray(m[:, obj].sum(1)).ravel() > 0).mean())}


def head_shares(mech: Path) -> list[dict]:
    """Per run at its last mechanistic checkpoint: counts of gather / aggregate / both heads and
    the saliency shares of the gather and aggregate sites."""
    from vlground import results as R

    if not (mech / "results.json").is_file():
        return []
    res = R.load(mech)
    rows = []
    recs = [r for r in res.records("heads") if r.get("step") is not None]
    table = res.frame("heads", "heads")
    for r in recs:
        here = table[table["key"] == r["key"]] if not table.empty and "key" in table else table
        kinds = here["kind"].value_counts().to_dict() if "kind" in here else {}
        n = len(here)
        rows.append({"step": r["step"], "heads": n, **{k: int(kinds.get(k, 0)) for k in ("gather", "aggregate", "both")},
                     "gather_share": r.get("gather_share"), "aggregate_share": r.get("aggregate_share")})
    lens = res.rows("lens")
    if lens and rows:
        rows[-1]["lens_rows"] = len(lens)
    for row in rows:  # per 1-based layer: mean over heads of the share of items where the head is gather / aggregate
        here = table[table["step"] == row["step"]]
        row["per_layer"] = {int(layer): (float(g["gather_frac"].mean()), float(g["aggregate_frac"].mean()))
                            for layer, g in here.groupby("layer")}
        abl = res.frame("ablation")
        row["ablation"] = abl[abl["step"] == row["step"]].to_dict("records") if not abl.empty else []
    return rows


def gpu_cost_lines(tps: dict[str, float]) -> list[str]:
    """Cost of the grids from measured tokens/s (this machine) and the README's paper-size figure."""
    cpu_tokens = 12 * 3072 * 8 * 512
    paper_tokens = 36 * 16384 * 32 * 512
    lines = []
    if tps:
        mean_tps = sum(tps.values()) / len(tps)
        lines.append(f"* `emergence-cpu` (12 tiny runs x 12.6M tokens = {cpu_tokens / 1e6:.0f}M tokens): at the measured "
                     f"{mean_tps / 1e3:.1f}k tokens/s per core of the tiny Transformer (mean of the runs above, "
                     f"1 thread, loaded machine) the Transformer and Mamba-2 runs take {8 * 3072 * 8 * 512 / mean_tps / 3600:.1f} core-hours; "
                     "the LSTM runs ~9x less; on 2 cores about 1.5-2 h of training.")
    gpu_h = 9.6 * paper_tokens / (45 * 20000 * 32 * 512)
    lines.append(f"* `emergence` (36 paper-size runs x 268M tokens = {paper_tokens / 1e9:.2f}G tokens): **no GPU was available "
                 "here, so this is not measured**. Scaling the README's paper-size estimate (`paper-text.yaml`: 14.75G "
                 "tokens in 9.6 GPU-hours on H100, bf16, 25% MFU from FLOPs, `scripts/bench/bench_paper_scale.py`) by tokens: "
                 f"about {gpu_h:.1f} GPU-hours, ~{gpu_h / 8:.1f} h wall on 8 GPUs, training only (the probes at every "
                 "checkpoint add about a tenth, from the CPU ratio of probe to training time). Run "
                 "`scripts/bench/bench_paper_scale.py` on the GPU to replace this estimate with measured tokens/s.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="ARCH/DENSITY/seed-K=RUN_DIR")
    p.add_argument("--corpus", action="append", default=[], metavar="DENSITY=CORPUS_DIR")
    p.add_argument("--work", type=Path, required=True, help="probe outputs and the combined report")
    p.add_argument("--doc", type=Path, default=Path("docs/emergence.md"))
    p.add_argument("--mech", action="store_true", help="saliency + heads at each run's last checkpoint")
    p.add_argument("--lens", action="store_true", help="with --mech: the tuned lens too")
    p.add_argument("--no-probe", action="store_true", help="use the probe outputs already in --work")
    p.add_argument("--checkpoints", default="all", help="behaviour at these checkpoints (all, or steps and last: 0,512,last)")
    p.add_argument("--note", default="", help="a sentence about the runs (what machine, what load) for the document")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from vlground import results as R
    from vlground import stats
    from vlground.report import emergence as E
    from vlground.report import write_report
    from vlground.report.verdicts import verdict_table
    from vlground.sweep.report import combine

    runs = {}
    for spec in a.run:
        rid, _, d = spec.partition("=")
        if not d or rid.count("/") != 2:
            raise SystemExit(f"emergence_report: error: --run {spec}: want ARCH/DENSITY/seed-K=RUN_DIR")
        runs[rid] = Path(d)
    timing = {}
    for rid, d in runs.items():
        safe = rid.replace("/", "__")
        if not a.no_probe:
            timing[rid] = probe(d, a.work / "probes" / safe, "behaviour", a.checkpoints)
            log.info("behaviour %s: %.0f s", rid, timing[rid])
            if a.mech:
                probes = "saliency,heads,ablation" + (",lens" if a.lens else "")
                timing[rid + " (mech)"] = probe(d, a.work / "mech" / safe, probes, "last", "last")
                log.info("mechanistic %s: %.0f s", rid, timing[rid + " (mech)"])
    parts = [(rid, R.load(a.work / "probes" / rid.replace("/", "__"))) for rid in runs]
    report = a.work / "report"
    report.mkdir(parents=True, exist_ok=True)
    R.write(combine(parts, report), report)
    res = R.load(report)
    html_path = write_report(report, res)
    verdicts = verdict_table(res)
    rows = E.emergence_rows(res.checkpoints, verdicts)
    doc_dir = a.doc.parent
    figs = {}
    for name in ("gain-vs-tokens.png", "training-curves.png"):
        if (report / "plots" / name).is_file():
            figs[name] = doc_dir / f"emergence-{name}"
            shutil.copyfile(report / "plots" / name, figs[name])
    r2 = res.frame("checkpoints")

    # -- the document --------------------------------------------------------------------------
    L = ["# Where grounding emerges: density x training tokens, measured", ""]
    L += [f"Written by `scripts/emergence_report.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
          + (a.note + " " if a.note else "")
          + "Generated CHILDES-like CHAT (`vlground.datasets.chat_generator`, seed 0), tiny models (`*-tiny.json`), "
          "one seed: a measurement of this harness's instrument on synthetic data, not of real CHILDES.", ""]
    L += ["## What was run", "", "| run | corpus | steps x batch x 512 | tokens | checkpoints probed | last train loss | last val loss | tokens/s |",
          "|---|---|---|---:|---:|---:|---:|---:|"]
    tps = {}
    for rid, d in runs.items():
        cfg = json.loads((d / "run.json").read_text(encoding="utf-8"))
        logs = train_log(d)
        tr = [r for r in logs if r.get("loss") is not None]
        va = [r for r in logs if r.get("val_loss") is not None]
        speeds = [r["tokens_per_s"] for r in tr if r.get("tokens_per_s")]
        if speeds:
            tps[rid] = sum(speeds) / len(speeds)
        n_ck = sum(1 for c in res.checkpoints if c["run"] == rid)
        steps_done = tr[-1]["step"] if tr else 0
        L.append(f"| `{rid}` | `{cfg.get('corpus')}` | {steps_done} x {cfg.get('batch_size')} x {cfg.get('chunk_len')} | "
                 f"{E.fmt_tokens(steps_done * cfg.get('batch_size', 0) * cfg.get('chunk_len', 0))} | {n_ck} | "
                 f"{tr[-1]['loss'] if tr else 'n/a'} | {va[-1]['val_loss'] if va else 'n/a'} | {tps.get(rid, math.nan):,.0f} |")
    L.append("")
    if a.corpus:
        L += ["Corpora (share of 512-token chunks in which a word has both its ENV and its LAN form):", "",
              "| density | files | tokens | chunks | all pairs | object words only |", "|---|---:|---:|---:|---:|---:|"]
        for spec in a.corpus:
            name, _, d = spec.partition("=")
            s = corpus_shares(Path(d))
            L.append(f"| {name} | {s['files']:,} | {E.fmt_tokens(s['tokens'])} | {s['chunks']:,} | {s['all_share']:.3f} | {s['object_share']:.3f} |")
        L.append("")
    L += ["Overfitting check: the validation loss (held-out chunks, `train_log.jsonl`) is printed beside the training loss "
          "above and drawn below; a validation loss that rises while the training loss falls would mean the run memorised "
          "its corpus.", ""]
    if "training-curves.png" in figs:
        L += [f"![training curves]({figs['training-curves.png'].name})", ""]

    L += ["## Information gain against training tokens", ""]
    if "gain-vs-tokens.png" in figs:
        L += [f"![information gain against training tokens]({figs['gain-vs-tokens.png'].name})", ""]
    L += ["Information gain = mismatch - match surprisal of `w<LAN>` after a frame with `w<ENV>` in the context (nats; "
          "docs/probes.md). Interval: bootstrap over words and items (one seed); p-values Holm-corrected across each "
          f"run's probed steps; \"grounded\" needs p < {stats.ALPHA} and a gain of at least {stats.MIN_EFFECT} nats "
          "(docs/statistics.md). *Detectable* is the smallest gain the run's test would have found with 80% power at "
          "that step's precision (vlground/power.py).", ""]
    L += ["| run group | emergence | gain at the last checkpoint |", "|---|---|---|"]
    for s in E.summary_rows(rows):
        L.append(f"| {s['architecture']}/{s['density']} | {s['emergence']} | {s['gain at the last checkpoint']} |")
    L += ["", "Every probed checkpoint:", "", E.markdown_table(rows), ""]

    L += ["## R² trajectory", "", "R² of the per-word information gain regressed on the word's cumulative co-occurrence "
          "count up to the step (the paper: rises, then falls as the model generalises).", "",
          "| run | " + " | ".join(f"{E.fmt_tokens(t)}" for t in _r2_tokens(r2, rows)) + " |",
          "|---|" + "---:|" * len(_r2_tokens(r2, rows))]
    for rid in runs:
        L.append(f"| {rid} | " + " | ".join(_r2_at(r2, rid, t, rows) for t in _r2_tokens(r2, rows)) + " |")
    L.append("")

    if a.mech:
        L += ["## Heads at the last checkpoint", "", "Saliency-based head types (docs/mechanism.md) at each run's last "
              "checkpoint: how many of the heads are gather / aggregate / both, and the share of saliency flowing through "
              "the gather and aggregate sites.", "", "| run | step | heads | gather | aggregate | both | gather share | aggregate share |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        from vlground.numbers import pval

        shares = {rid: head_shares(a.work / "mech" / rid.replace("/", "__")) for rid in runs}
        for rid in runs:
            for h in shares[rid]:
                L.append(f"| {rid} | {h['step']} | {h['heads']} | {h['gather']} | {h['aggregate']} | {h['both']} | "
                         f"{_f(h['gather_share'])} | {_f(h['aggregate_share'])} |")
        layers = sorted({layer for hs in shares.values() for h in hs for layer in h["per_layer"]})
        L += ["", "Per layer (1-based), the share of (head, item) pairs whose head is gather / aggregate under the default "
              "gather rule (`strip-off-target`); a head is counted as a type in the table above when it is that type for "
              "more items than not.", "", "| run | step | " + " | ".join(f"L{layer}" for layer in layers) + " |",
              "|---|---:|" + "---|" * len(layers)]
        for rid in runs:
            for h in shares[rid]:
                L.append(f"| {rid} | {h['step']} | " + " | ".join(
                    "{:.2f} / {:.2f}".format(*h["per_layer"][layer]) if layer in h["per_layer"] else "" for layer in layers) + " |")
        L += ["", "Zeroing the heads of each type per item against as many random heads of the control pool (the "
              "`ablation` probe; surprisal of the target in nats; p: the item-level Wilcoxon, not clustered by word).", "",
              "| run | step | head type | items tested | heads per item | intervention | control | original | p |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
        for rid in runs:
            for h in shares[rid]:
                for r in h["ablation"]:
                    L.append(f"| {rid} | {h['step']} | {r['head_type']} | {r['n_items']}/{r['n_items_total']} | "
                             f"{_f(r['avg_count'])} | {_f(r['intervention_surprisal'])} | {_f(r['control_surprisal'])} | "
                             f"{_f(r['original_surprisal'])} | {pval(r['p_value'])} |")
        L.append("")

    L += ["## Cost", ""]
    L += [f"Probing (1 thread, loaded machine): " + "; ".join(f"{k} {v:.0f} s" for k, v in timing.items()) + "." if timing else
          "Probing: outputs reused from an earlier invocation (`--no-probe`)."]
    L += [""] + gpu_cost_lines(tps) + [""]
    L += ["## How to reproduce", "", "```bash", "# the corpora and the two 50M-token runs (what was run here)",
          "python - <<'EOF'", "from dataclasses import asdict",
          "from vlground.datasets.chat_generator import build_default_corpus, DENSE_OPTIONS",
          "build_default_corpus('childes', seed=0, n_files=21000)",
          "build_default_corpus('dense', seed=0, n_files=13000, **asdict(DENSE_OPTIONS))", "EOF",
          "for d in childes dense; do OMP_NUM_THREADS=1 vlground train --corpus $d --arch transformer --size tiny --seed 0 \\",
          "  --steps 12800 --batch-size 8 --lr 0.003 --warmup-steps 200 --checkpoint-every 400 --checkpoint-dense-until 512 \\",
          "  --log-every 100 --no-progress --out runs/transformer-$d & done; wait",
          "OMP_NUM_THREADS=1 python scripts/emergence_report.py --mech \\",
          "  --run transformer/childes/seed-0=runs/transformer-childes --run transformer/dense/seed-0=runs/transformer-dense \\",
          "  --corpus childes=childes --corpus dense=dense --work probe --doc docs/emergence.md",
          "# the whole grid (4 densities x 3 architectures): on this CPU, or at paper size on a GPU cluster",
          "vlground sweep emergence-cpu            # ~2 h on 2 cores, resumable",
          "vlground sweep emergence --address auto # paper size", "```", "",
          f"The combined HTML report of these runs: `{html_path}` (not in the repository)."]
    a.doc.write_text("\n".join(L) + "\n", encoding="utf-8")
    log.info("wrote %s", a.doc)
    for s in E.summary_rows(rows):
        print(f"{s['architecture']}/{s['density']}: {s['emergence']}")
    return 0


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.3f}"


def _r2_tokens(ck, rows) -> list:
    """Up to 8 log-spread token counts at which R² is shown."""
    toks = sorted({r["tokens"] for r in rows if r.get("tokens")})
    if len(toks) <= 8:
        return toks
    idx = sorted({round(i * (len(toks) - 1) / 7) for i in range(8)})
    return [toks[i] for i in idx]


def _r2_at(ck, rid, tokens, rows) -> str:
    steps = {r["step"] for r in rows if r.get("tokens") == tokens and r["group"] == rid.rsplit("/seed-", 1)[0]}
    if ck.empty or "r2_cooc" not in ck:
        return "n/a"
    v = ck[(ck["run"] == rid) & (ck["step"].isin(steps))]["r2_cooc"]
    return _f(float(v.iloc[0])) if len(v) else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
