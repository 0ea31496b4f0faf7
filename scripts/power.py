"""Type-I error and power of the verdicts' tests on simulated items (vlground.simulate).

For each design (the demo's and the paper's item counts) and each noise setting, the share of
``--sets`` simulated data sets with p < 0.05 at planted effects of 0 (type-I error), 0.05, 0.1 and
0.2 nats, per method. Prints a Markdown table (the one in docs/statistics.md).

    python scripts/power.py [--sets 500] [--methods word-t,bootstrap,mixed] [--mixed-sets 100] [--designs demo,paper]

Designs: demo = 40 object words x 16 frame pairs (4 ENV x 4 LAN templates) x 3 seeds
(vlground/configs/sweeps/demo.yaml); paper = 40 words x 16 frame pairs x 5 seeds (the paper's 5
seeds, configs/sweeps/paper-text.yaml; its word count is not in the blog post: 40 assumed).
Noise: "measured" = the SDs of a tiny demo Transformer's pair gains (item SD 0.008 nats, word x
seed SD 0.008, no shared word effect); "trained" = 0.1 nats for each of word, word x seed and item,
a model whose per-word gains vary as much as the effects tested.
"""
from __future__ import annotations

import argparse
import sys
import time

from vlground.simulate import Design, rejection_rates

DESIGNS = {"demo": dict(words=40, frames=16, seeds=3), "paper": dict(words=40, frames=16, seeds=5)}
NOISE = {"measured": dict(word_sd=0.0, word_seed_sd=0.008, item_sd=0.008, frame_sd=0.002),
         "trained": dict(word_sd=0.1, word_seed_sd=0.1, item_sd=0.1, frame_sd=0.05)}
EFFECTS = (0.0, 0.05, 0.1, 0.2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", type=int, default=500)
    p.add_argument("--mixed-sets", type=int, default=100, help="data sets for the (slow) mixed model")
    p.add_argument("--methods", default="word-t,bootstrap,mixed")
    p.add_argument("--noise", default="measured,trained")
    p.add_argument("--designs", default=",".join(DESIGNS), help=f"of {', '.join(DESIGNS)}")
    a = p.parse_args(argv)
    methods = a.methods.split(",")
    print("| design | noise | method | sets | p<0.05 at 0 (type-I) | 0.05 nats | 0.1 nats | 0.2 nats |")
    print("|---|---|---|---|---|---|---|---|")
    for dname in a.designs.split(","):
        dd = DESIGNS[dname]
        for nname in a.noise.split(","):
            design = Design(**dd, **NOISE[nname])
            for m in methods:
                n = a.mixed_sets if m == "mixed" else a.sets
                t0 = time.perf_counter()
                rates = [rejection_rates(design, (m,), effect=e, n_sets=n, seed=100 + i, n_boot=499)[m]
                         for i, e in enumerate(EFFECTS)]
                print(f"| {dname} ({design.words} x {design.frames} x {design.seeds}) | {nname} | {m} | {n} | "
                      + " | ".join(f"{r:.3f}" for r in rates) + f" |  <!-- {time.perf_counter() - t0:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
