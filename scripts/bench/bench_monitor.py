"""Benchmark: the grounding monitor's cost per generated token, as a ratio to plain generation, in one run.

The same greedy decoding loop (:func:`vlground.monitor.generate.decode`, key/value cache) runs on the
same prompts five ways, interleaved round by round:

* ``plain-sdpa``: no capture, the model's fused attention (what generation without a monitor would use);
* ``plain-eager``: no capture, eager attention;
* ``monitored``: the monitor as it runs now: ``sdpa`` in every layer, the last attention row computed
  from query and keys only in the layers of the chosen heads (:mod:`vlground.monitor.rows`), the
  grounding score of the chosen heads at every step (what mitigation needs);
* ``monitored-eager``: the monitor before (commit 77239e9): eager attention in every layer, every
  head's last row captured by forward hooks, the score at every step;
* ``monitored+baselines``: what the evaluation runs: every layer's rows (sdpa kept), the score plus
  what is computed per word (all heads, 20 random sets).

It prints seconds per generated token of each and the median over rounds of the per-round ratios
to ``plain-sdpa`` and ``plain-eager``. One torch thread (2 busy cores here).

    python scripts/bench/bench_monitor.py                                  # tiny random LLaVA
    python scripts/bench/bench_monitor.py --testbed vlground-demo-vision   # the vision testbed's trained model
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _setup(args):
    from vlground.monitor.backends import backend_for

    if args.testbed:
        from vlground.adapters.visdial_dinov2 import VisdialDinov2Adapter

        d = Path(args.testbed)
        adapter = VisdialDinov2Adapter.from_options({
            "runs": [str(d / "runs" / "transformer" / "seed-0")], "images": d / "scenes" / "val" / "images",
            "annotations": d / "scenes" / "val" / "instances.json", "mismatch": d / "mismatched", "device": "cpu"})
        ckpt = adapter.checkpoints()[-1]
        loaded = adapter.load(ckpt)
        b = backend_for(adapter, loaded)
        images = sorted(b.by_image)[: args.prompts]
        return adapter, loaded, b, images, "<C>", f"visdial_dinov2 {ckpt.key}"
    from vlground.adapters.llava15 import Llava15Adapter
    from vlground.vision.tiny_llava import save_tiny_llava

    folder = save_tiny_llava(Path(tempfile.mkdtemp()) / "tiny-llava", image_size=args.image_size, patch_size=4, layers=4)
    images = ROOT / "datasets" / "fixtures" / "images"
    adapter = Llava15Adapter.from_options({"model": str(folder), "images": images, "annotations": images / "instances.json",
                                           "mismatch": images, "device": "cpu"})
    loaded = adapter.load(adapter.checkpoints()[0])
    b = backend_for(adapter, loaded)
    files = sorted(str(p) for p in images.glob("*.png"))[: args.prompts]
    return adapter, loaded, b, files, b.prompt("Describe the image."), f"tiny LLaVA ({args.image_size} px, 4 layers)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--testbed", help="a `vlground demo --vision` folder (its seed-0 run's last checkpoint)")
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--tokens", type=int, default=16, help="new tokens per prompt (no early stop)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--image-size", type=int, default=48, help="tiny LLaVA: image px (48 -> 144 image tokens)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from vlground.monitor.generate import decode
    from vlground.monitor.heads import random_head_sets
    from vlground.monitor.score import capture_attention, monitored_layers
    from vlground.monitor.tasks import Scorer, WordRow

    adapter, loaded, b, images, prompt, what = _setup(args)
    sites = adapter.attention_site(loaded)
    heads = torch.zeros((len(sites.layers), sites.n_heads), dtype=torch.bool)
    heads[len(sites.layers) // 2, 0] = True
    scorer = Scorer(heads, random_head_sets(heads, 20, 0))
    encs = [b.encode(img, prompt) for img in images]
    model = loaded.model

    def plain(impl: str):
        model.set_attn_implementation(impl)
        n = 0
        for e in encs:
            n += len(decode(adapter, loaded, e.inputs, max_new_tokens=args.tokens))
        return n

    def monitored(mode: str):
        model.set_attn_implementation("eager" if mode == "eager" else "sdpa")
        kernel = "eager" if mode == "eager" else "sdpa"
        layers = monitored_layers(sites, heads) if mode == "now" else None  # baselines: every layer's rows
        n = 0
        for e in encs:
            with capture_attention(model, sites, layers=layers, kernel=kernel) as rec:
                steps = decode(adapter, loaded, e.inputs, max_new_tokens=args.tokens, recorder=rec, image=e.image, heads=heads)
            if mode == "baselines":  # what the evaluation adds on every word: all heads and 20 random sets
                for s in steps:
                    scorer.fill(WordRow("", "", 0, "", "", "", False, 0, 0.0, 0.0), s, e.image)
            n += len(steps)
        return n

    runs = {"plain-sdpa": lambda: plain("sdpa"), "plain-eager": lambda: plain("eager"),
            "monitored": lambda: monitored("now"), "monitored-eager": lambda: monitored("eager"),
            "monitored+baselines": lambda: monitored("baselines")}
    for f in runs.values():  # warm-up
        f()
    per_token: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, f in runs.items():
            t0 = time.perf_counter()
            n = f()
            per_token[name].append((time.perf_counter() - t0) / n)
    print(f"model: {what}; {len(encs)} prompts x {args.tokens} tokens, {args.rounds} rounds, 1 thread, "
          f"{int(encs[0].image.sum())} image tokens, {len(sites.layers)} layers x {sites.n_heads} heads")
    for name, v in per_token.items():
        print(f"  {name:20s} {1e3 * statistics.median(v):8.3f} ms/token (median over rounds)")
    for mon in ("monitored", "monitored-eager", "monitored+baselines"):
        for ref in ("plain-eager", "plain-sdpa"):
            ratios = [m / r for m, r in zip(per_token[mon], per_token[ref])]
            print(f"  {mon} / {ref}: {statistics.median(ratios):.3f} (median of per-round ratios; "
                  f"range {min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
