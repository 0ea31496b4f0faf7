"""``vlground demo --vision``: the vision testbed end to end on a CPU, with nothing downloaded.

1. synthetic scenes with known boxes and VisDial-format dialogs (:mod:`vlground.datasets.scene_generator`);
2. a tiny randomly initialised DINOv2 saved as a folder (:mod:`vlground.vision.tiny_dinov2`), used
   exactly as ``--vision facebook/dinov2-base`` would be;
3. ``build-corpus --visdial``: features once into the cache, corpus with ``<image>`` positions;
4. ``build-mismatch --inpaint --remove`` on held-out scenes with a tiny SD2-inpainting pipeline;
5. a local sweep (:mod:`vlground.sweep`, embedded Ray): tiny Transformers, one task per seed, the
   features as input embeddings, then ``probe --adapter visdial_dinov2`` per run: behaviour at
   every checkpoint, box heads, their ablation and the lens at the last; ``report/report.html``.

Each step resumes (finished scenes, features, runs, mismatches and probed checkpoints are kept).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

#: training settings over transformer-tiny.json
DEMO_TRAIN = {"batch_size": 16, "lr": 2e-3, "warmup_steps": 30, "checkpoint_every": 100, "checkpoint_dense_until": 32,
              "log_every": 25, "val_fraction": 0.05}


def run(args: argparse.Namespace) -> int:
    from vlground.errors import require

    require("diffusers", "vision", "demo --vision")  # before any work, not at step 4
    import torch

    from vlground.cli import main as cli
    from vlground.datasets.scene_generator import SceneSpec, generate_scenes

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out: Path = Path(args.out) if str(args.out) != "vlground-demo" else Path("vlground-demo-vision")
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()][: 1 if quick else 2]
    steps = 40 if quick else 500
    n_scenes = 120 if quick else 800

    scenes, val = out / "scenes" / "train", out / "scenes" / "val"
    print(f"[1/5] scenes: {scenes.parent}", flush=True)
    if not (scenes / "visdial.json").is_file():
        generate_scenes(scenes, SceneSpec(n=n_scenes, seed=0))
    if not (val / "visdial.json").is_file():
        generate_scenes(val, SceneSpec(n=12 if quick else 40, seed=1), split="val", start_id=100000)

    dino, sd = out / "models" / "tiny-dinov2", out / "models" / "tiny-sd2-inpaint"
    print(f"[2/5] tiny random DINOv2: {dino}", flush=True)
    if not (dino / "config.json").is_file():
        from vlground.vision.tiny_dinov2 import save_tiny_dinov2

        save_tiny_dinov2(dino)

    corpus = out / "corpus"
    print(f"[3/5] corpus: {corpus}", flush=True)
    if not (corpus / "corpus.json").is_file():
        cli(["build-corpus", "--visdial", str(scenes / "visdial.json"), "--images", str(scenes / "images"),
             "--annotations", str(scenes / "instances.json"), "--vision", str(dino), "--out", str(corpus),
             "--chunk-len", "96", "--device", "cpu"])

    mm = out / "mismatched"
    print(f"[4/5] mismatched images (objects removed by a tiny SD2 inpainting pipeline): {mm}", flush=True)
    if not (sd / "model_index.json").is_file():
        from vlground.vision.tiny import save_tiny_inpaint_pipeline

        save_tiny_inpaint_pipeline(sd)
    cli(["build-mismatch", "--inpaint", "--remove", "--images", str(val / "images"), "--annotations",
         str(val / "instances.json"), "--out", str(mm), "--model", str(sd), "--steps", "2", "--resolution", "64",
         "--guidance-scale", "1.0", "--device", "cpu"])

    from vlground.sweep import driver, spec

    sweep = spec.from_dict({
        "size": "tiny",
        "corpora": {"scenes": {"source": "path", "path": str(corpus)}},
        "grid": [{"archs": ["transformer"], "seeds": seeds, "corpus": "scenes"}],
        "train": {**DEMO_TRAIN, "steps": steps},
        "probe": {"adapter": "visdial_dinov2", "probes": ["behaviour", "boxheads", "boxablation", "lens"],
                  "mechanistic_checkpoints": "last",
                  "options": {"images": str(val / "images"), "annotations": str(val / "instances.json"),
                              "mismatch": str(mm), "device": "cpu", "ablation_draws": 5}},
        "report_every_s": 30,
    }, "demo --vision", out)
    print(f"[5/5] training transformer x seeds {seeds}, {steps} steps each, and probing every checkpoint "
          f"(box heads, ablation and lens at the last): {len(sweep.tasks)} tasks on a local Ray instance", flush=True)
    outcome = driver.run_sweep(sweep, num_cpus=max(1, min(len(seeds), os.cpu_count() or 1)))
    driver.summary(outcome, sys.stderr)
    if not outcome.ok or outcome.report is None:
        return 1
    from vlground.report.verdicts import final_verdicts

    for v in final_verdicts(outcome.report.parent):
        print(f"      {v['text']}")
    print(f"report: {outcome.report.resolve()}  ({time.perf_counter() - t0:.0f} s)")
    return 0
