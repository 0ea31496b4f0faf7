"""Is an untrained (step-0) model's information gain a real initialisation bias or a test artefact?

Builds a generated CHILDES-like corpus, initialises tiny models (the step-0 checkpoint is the
initialisation) under many seeds, probes each with ``behaviour`` and writes the per-item gains
to ``OUT/step0-gains.parquet``. Then, per method of :mod:`vlground.stats`: the share of seeds whose
step-0 gain tests significant at alpha = 0.05 (one seed at a time: the null's type-I error on real
items), and across seeds: is the mean gain over independent initialisations different from zero
(a real initialisation bias would be)?

    python scripts/step0.py OUT [--seeds 24] [--archs transformer,lstm] [--files 60]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, default=24)
    p.add_argument("--archs", default="transformer,lstm")
    p.add_argument("--files", type=int, default=60)
    p.add_argument("--chunk-len", type=int, default=128)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import pandas as pd

    from vlground import stats
    from vlground.adapters.childes import ChildesAdapter
    from vlground.datasets.chat_generator import build_default_corpus
    from vlground.probes.runner import run_probes
    from vlground.train import TrainConfig, train

    a.out.mkdir(parents=True, exist_ok=True)
    gains_f = a.out / "step0-gains.parquet"
    if not gains_f.is_file():
        corpus = a.out / "corpus"
        if not (corpus / "corpus.json").is_file():
            corpus = build_default_corpus(corpus, seed=0, n_files=a.files, chunk_len=a.chunk_len, overwrite=True)
        frames = []
        for arch in a.archs.split(","):
            runs = [train(TrainConfig(corpus=str(corpus), out=str(a.out / arch / f"seed-{s}"), arch=arch, size="tiny", seed=s,
                                      progress=False, overrides={"steps": 1, "checkpoint_every": 1, "checkpoint_dense_until": 0,
                                                                 "warmup_steps": 0, "batch_size": 1}))
                    for s in range(a.seeds)]
            res = run_probes(ChildesAdapter(ChildesAdapter.Options(runs=tuple(str(r) for r in runs))), ["behaviour"],
                              checkpoints="0", progress=False)  # step 0: the initialisation
            for direction in ("env2lan", "lan2env"):
                g = stats.item_gains(res.frame("items"), direction)
                frames.append(g.assign(arch=arch, direction=direction))
        pd.concat(frames).to_parquet(gains_f)
    gains = pd.read_parquet(gains_f)
    from scipy.stats import wilcoxon

    from vlground.clustered import cluster_bootstrap

    one_seed = {
        "word-t": lambda d: stats.word_test(d.gain, d.word).p_value,
        "bootstrap": lambda d: cluster_bootstrap(d.gain, d.word, n_boot=999).p_value,
        "item-wilcoxon": lambda d: float(wilcoxon(d.gain, alternative="greater").pvalue),
    }
    out = {}
    for (arch, direction), g in gains.groupby(["arch", "direction"]):
        per_seed = g.groupby("seed")["gain"].mean()
        row = {"seeds": int(per_seed.size), "words": int(g.word.nunique()), "pairs_per_seed": int(len(g) / per_seed.size),
               "mean_gain": float(g.gain.mean()), "seed_means": [round(float(x), 5) for x in per_seed],
               "t_test_over_seed_means_p": stats.seed_test(per_seed.to_numpy())}
        for name, fn in one_seed.items():
            ps = [fn(sdf) for _, sdf in g.groupby("seed")]
            row[f"share of seeds with p < 0.05 [{name}]"] = sum(p < 0.05 for p in ps) / len(ps)
        for k in (2, 3):  # groups of k seeds, as a verdict pools them: the checked mixed model
            seeds = sorted(g.seed.unique())
            ps = []
            for i in range(0, len(seeds) - k + 1, k):
                est, _ = stats.step_estimate(g[g.seed.isin(seeds[i:i + k])])
                ps.append(est.p_value)
            row[f"share of {k}-seed groups with p < 0.05 [mixed]"] = f"{sum(p < 0.05 for p in ps)}/{len(ps)}"
        # variance components of the null: word (shared by seeds), word x seed, item
        cells = g.groupby(["word", "seed"]).gain.mean()
        row["sd_item"] = float((g.gain - g.set_index(["word", "seed"]).index.map(cells)).std())
        row["sd_word_x_seed_mean"] = float(cells.std())
        row["sd_word_mean_over_seeds"] = float(cells.groupby("word").mean().std())
        out[f"{arch}/{direction}"] = row
    print(json.dumps(out, indent=1))
    (a.out / "step0-summary.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
