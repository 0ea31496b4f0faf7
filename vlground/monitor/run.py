"""``run_monitor``: one task on one checkpoint, evaluated against the baselines; files in ``out``.

``OUT/`` gets ``words.csv`` (one row per labelled word: label, grounding score and its parts, the
baselines), ``random_scores.npy`` (``[words, draws]``: the score of each random head set),
``heads.json`` (the heads read, 1-based layers), ``evaluation.csv`` and ``monitor.json`` (settings,
evaluation table, task outcome, mitigation, notes) and ``report.html`` (the monitor section).
With ``mitigate`` the task runs a second time with mitigation on and ``words_mitigated.csv`` holds
its words; its threshold, unless given, is the 25th percentile of the grounding scores of the first
run's words (no labels are used to choose it).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlground import metrics
from vlground.corpus.format import write_json
from vlground.engine.adapter import Adapter
from vlground.errors import InputError
from vlground.monitor.evaluate import describe, evaluation_rows, fraction_beaten, roc_curve
from vlground.monitor.tasks import TASKS, Scorer, TaskConfig, TaskRunner, WordRow

log = logging.getLogger(__name__)

#: detector name -> (column of words.csv, sign: +1 larger = more likely hallucinated, description)
DETECTORS = {
    "grounding score (identified heads)": ("score", -1, "mean over the identified heads of image share x concentration, negated"),
    "image share (identified heads)": ("share", -1, "identified heads' attention share on image tokens, negated"),
    "word probability": ("prob", -1, "the model's probability of the word, negated"),
    "predictive entropy": ("entropy", +1, "entropy of the next-token distribution at the word's position"),
    "image share (all heads)": ("all_share", -1, "attention share on image tokens over all heads, negated"),
    "grounding score (all heads)": ("all_score", -1, "the grounding score over all heads, negated"),
}
RANDOM = "grounding score (random heads, same size)"
REFERENCE = "grounding score (identified heads)"


@dataclass
class MonitorConfig:
    out: Path  #: output folder
    heads: Path  #: heads file, or a boxheads probe result (folder or results.json)
    task: TaskConfig = field(default_factory=TaskConfig)
    level: float = 0.7  #: boxheads: a head is taken when aggregate at this level on >= half the items
    heads_run: str | None = None  #: boxheads: whose heads (default: the monitored run's, or the only run)
    random_draws: int = 20  #: random head sets of the identified set's size (the control)
    n_boot: int = 1000  #: bootstrap resamples (over images) for the CIs
    seed: int = 0  #: random head sets and bootstrap
    mitigate: bool = False  #: also run with mitigation and report its effect
    checkpoint: str = "last"  #: which checkpoint of the adapter (``last``, ``first`` or a step)


def _write_csv(path: Path, rows: list[WordRow]) -> None:
    cols = [f.name for f in dataclasses.fields(WordRow) if f.name != "random_scores"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: getattr(r, c) for c in cols})


def _detectors(rows: list[WordRow]) -> dict[str, np.ndarray]:
    out = {name: sign * np.array([getattr(r, col) for r in rows], dtype=float) for name, (col, sign, _) in DETECTORS.items()}
    out[RANDOM] = -np.array([r.random_scores for r in rows], dtype=float).reshape(len(rows), -1)
    return out


def evaluate_words(rows: list[WordRow], n_boot: int = 1000, seed: int = 0) -> dict:
    """Evaluation table, ROC curves and score distributions of labelled words."""
    y = np.array([r.label for r in rows], dtype=bool)
    groups = np.array([r.image_id for r in rows])
    det = _detectors(rows)
    desc = {k: v[2] for k, v in DETECTORS.items()}
    desc[RANDOM] = "the grounding score of random sets of non-identified heads (mean AUROC over the draws)"
    table = evaluation_rows(y, det, groups, n_boot=n_boot, seed=seed, reference=REFERENCE, descriptions=desc)
    curves = {}
    for name, d in det.items():
        fpr, tpr = roc_curve(y, d if d.ndim == 1 else d[:, 0])
        curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    beaten = fraction_beaten(y, det[REFERENCE], det[RANDOM]) if det[RANDOM].shape[1] else float("nan")
    dist = {"grounded": describe([r.score for r in rows if not r.label]),
            "hallucinated": describe([r.score for r in rows if r.label])}
    return {"table": table, "roc": curves, "random_sets_at_least_as_good": beaten, "distributions": dist}


def run_monitor(adapter: Adapter, cfg: MonitorConfig) -> dict:
    """Run ``cfg.task`` on the chosen checkpoint of ``adapter``; returns (and writes) ``monitor.json``."""
    import torch

    from vlground.probes.runner import select_checkpoints
    from vlground.monitor.backends import backend_for
    from vlground.monitor.heads import load_heads, random_head_sets
    from vlground.vision.coco import load_coco

    if cfg.task.task not in TASKS:
        raise InputError(f"--task {cfg.task.task!r}: expected one of {', '.join(TASKS)}")
    from vlground import folders

    heads_input = [] if folders.kind_of(cfg.heads) == "probe" else [cfg.heads]  # a probe folder holds its monitors
    folders.check_output(cfg.out, "monitor", [*folders.input_paths(adapter.options), *heads_input])
    ckpts = select_checkpoints(adapter.checkpoints(), cfg.checkpoint)
    if len({c.run for c in ckpts}) > 1:
        raise InputError(f"the monitor evaluates one model; got runs {', '.join(sorted({c.run for c in ckpts}))} (give one --run)")
    ckpt = ckpts[-1]
    heads_run = cfg.heads_run
    try:
        heads = load_heads(cfg.heads, cfg.level, heads_run if heads_run is not None else ckpt.run)
    except InputError as exc:
        if heads_run is not None or "no run" not in str(exc):
            raise
        heads = load_heads(cfg.heads, cfg.level, None)
    loaded = adapter.load(ckpt)
    sites = adapter.attention_site(loaded)
    if sites is None:
        raise InputError(f"adapter {adapter.name}: the model has no attention sites to monitor")
    chosen = heads.mask(tuple(sites.layers), sites.n_heads)
    random_sets = random_head_sets(chosen, cfg.random_draws, cfg.seed)
    o = adapter.options
    coco = load_coco(o.annotations, o.images)
    torch.manual_seed(cfg.seed)
    runner = TaskRunner(backend_for(adapter, loaded), sites, Scorer(chosen, random_sets, cfg.task.topk), cfg.task, coco)
    rows = runner.run()
    outcome = runner.outcome()
    out = Path(cfg.out)
    folders.check_output(out, "monitor")  # again: it may have changed while the model ran
    folders.claim(out, "monitor")
    _write_csv(out / "words.csv", rows)
    np.save(out / "random_scores.npy", np.array([r.random_scores for r in rows], dtype=np.float32))
    write_json(out / "heads.json", heads.to_json())
    n_hall = sum(r.label for r in rows)
    notes = list(runner.notes)
    if not rows:
        notes.append(f"task {cfg.task.task}: no labelled words (the model named no annotated category); nothing to evaluate")
    elif n_hall == 0 or n_hall == len(rows):
        notes.append(f"all {len(rows)} words have the same label; AUROC/AUPRC are undefined")
    ev = evaluate_words(rows, cfg.n_boot, cfg.seed) if rows else {"table": [], "roc": {}, "random_sets_at_least_as_good": None,
                                                                   "distributions": {}}
    result = {
        "version": 1, "task": cfg.task.task,
        "settings": {**adapter.settings(), **{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items() if k != "task"},
                     "task": dataclasses.asdict(cfg.task)},
        "checkpoint": {"run": ckpt.run, "step": ckpt.step, "path": ckpt.path},
        "heads": heads.to_json(), "n_words": len(rows), "n_hallucinated": n_hall,
        "evaluation": ev["table"], "roc": ev["roc"], "random_sets_at_least_as_good": ev["random_sets_at_least_as_good"],
        "distributions": ev["distributions"], "outcome": outcome,
        "scores": {"grounded": [r.score for r in rows if not r.label], "hallucinated": [r.score for r in rows if r.label]},
        "examples": _examples(rows, coco), "notes": notes,
    }
    if cfg.mitigate:
        if cfg.task.threshold is None and not rows:
            raise InputError("--mitigate: no scored words to set the threshold from; give --threshold")
        threshold = cfg.task.threshold if cfg.task.threshold is not None else float(np.percentile([r.score for r in rows], 25))
        runner.cfg = dataclasses.replace(cfg.task, threshold=threshold)
        mit_rows = runner.run(mitigate=True)
        _write_csv(out / "words_mitigated.csv", mit_rows)
        result["mitigation"] = {"threshold": threshold, "penalty": cfg.task.penalty, "before": outcome,
                                "after": runner.outcome(), "penalised_steps": runner.penalised,
                                "penalised_labelled_words": sum(r.penalised for r in mit_rows),
                                "threshold_rule": "given" if cfg.task.threshold is not None else "25th percentile of the unmitigated words' scores"}
    result = metrics.nan_to_none(result)
    with open(out / "evaluation.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(result["evaluation"][0]) if result["evaluation"] else ["detector"])
        w.writeheader()
        w.writerows(result["evaluation"])
    write_json(out / "monitor.json", result)
    from vlground.report.monitor_section import write_monitor_report

    write_monitor_report(out, result)
    return result


def _examples(rows: list[WordRow], coco, n: int = 6) -> list[dict]:
    """A few queries with their words (flagged ones marked), hallucinated first."""
    by_query: dict[str, list[WordRow]] = {}
    for r in rows:
        by_query.setdefault(f"{r.task}:{r.query}", []).append(r)
    ordered = sorted(by_query.values(), key=lambda ws: (not any(w.label for w in ws), ws[0].image_id))
    boxes: dict[int, list] = {}
    for a in coco.annotations:
        boxes.setdefault(a.image_id, []).append([a.category, list(a.bbox)])
    return [{"image": ws[0].image, "image_id": ws[0].image_id, "text": ws[0].text, "boxes": boxes.get(ws[0].image_id, []),
             "words": [{"word": w.word, "category": w.category, "label": w.label, "score": w.score, "position": w.position}
                       for w in ws]} for ws in ordered[:n]]
