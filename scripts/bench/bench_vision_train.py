"""Training throughput of the vision testbed: cached DINOv2 features vs re-running DINOv2 every step.

Both arms train the same tiny Transformer on the same corpus batches, in one process, interleaved
round by round (so a busy machine slows both alike):

* ``cached``: :func:`vlground.train.data.make_batch` reads the features from the memory-mapped
  cache (what ``vlground train`` does);
* ``recompute``: the batch's images are loaded from disk and run through DINOv2 (no grad) on every
  step, then the same forward/backward.

    python scripts/bench/bench_vision_train.py [--vision FOLDER_OR_ID] [--scenes 64] [--steps 10] [--rounds 3]

Default vision model: a tiny random DINOv2 (hidden 64, 2 layers, 112 px); pass
``--vision facebook/dinov2-base`` (with the LM at width 768) for the paper's setting. Prints
tokens/s of each arm per round and the ratio cached / recompute.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", default=None, help="DINOv2 id or folder (default: a tiny random one)")
    p.add_argument("--scenes", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="steps per arm per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from PIL import Image

    from vlground.corpus.format import Corpus
    from vlground.datasets.scene_generator import SceneSpec, generate_scenes
    from vlground.datasets.visdial_corpus import VisdialCorpusConfig, build_visdial_corpus
    from vlground.train.data import embed_inputs, make_batch
    from vlground.train.models import build_model
    from vlground.vision.features import Featurizer, VisionSpec, corpus_images
    from vlground.vision.tiny_dinov2 import save_tiny_dinov2

    tmp = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    vision = args.vision or str(save_tiny_dinov2(tmp / "tiny-dinov2"))
    generate_scenes(tmp / "scenes", SceneSpec(n=args.scenes, seed=0))
    corpus_dir = build_visdial_corpus(VisdialCorpusConfig(
        visdial=str(tmp / "scenes" / "visdial.json"), images=str(tmp / "scenes" / "images"),
        annotations=str(tmp / "scenes" / "instances.json"), vision=vision, out=str(tmp / "corpus"), chunk_len=128,
        device="cpu", progress=False))
    corpus = Corpus.load(corpus_dir)
    images = corpus_images(corpus)
    files = [tmp / "scenes" / "images" / r["file_name"] for r in json.loads((corpus_dir / "images.json").read_text())]
    featurizer = Featurizer(VisionSpec(vision))
    featurizer.model  # load once, outside the timing

    torch.manual_seed(0)
    model = build_model("transformer", {"n_layer": 4, "n_embd": images.dim, "n_head": 4}, len(corpus.vocab),
                        max_len=corpus.chunk_len, attn_implementation="sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    B = args.batch_size

    def step(batch):
        loss = model(**embed_inputs(model, batch)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def cached(idx):
        step(make_batch(corpus.chunks, idx, corpus.pad_id, images))

    def recompute(idx):
        batch = make_batch(corpus.chunks, idx, corpus.pad_id)  # text only, then the images through DINOv2
        pos = np.asarray(images.positions[idx])
        mask = pos >= 0
        img, tok = np.divmod(pos[mask], images.n_tokens)
        uniq, inv = np.unique(img, return_inverse=True)
        ims = []
        for i in uniq:
            with Image.open(files[i]) as im:
                ims.append(im.convert("RGB"))
        feats = torch.from_numpy(featurizer(ims).astype(np.float32))  # [n_images, n_tokens, d]
        batch["labels"] = batch["labels"].masked_fill(torch.from_numpy(mask), -100)
        batch["image_mask"] = torch.from_numpy(mask)
        batch["image_features"] = feats[torch.from_numpy(inv), torch.from_numpy(tok)]
        step(batch)

    tokens = B * corpus.chunk_len * args.steps
    ratios = []
    for r in range(args.rounds):
        order = [rng.integers(0, corpus.n_chunks, B) for _ in range(args.steps)]
        t = {}
        for name, fn in (("cached", cached), ("recompute", recompute)):
            t0 = time.perf_counter()
            for idx in order:
                fn(idx)
            t[name] = time.perf_counter() - t0
        ratios.append(t["recompute"] / t["cached"])
        print(f"round {r}: cached {tokens / t['cached']:.0f} tok/s, recompute {tokens / t['recompute']:.0f} tok/s, "
              f"ratio {ratios[-1]:.2f}x", flush=True)
    print(f"vision model {vision} ({images.n_tokens} tokens x {images.dim}); batch {B} x {corpus.chunk_len}; "
          f"cached features train {float(np.median(ratios)):.2f}x faster than re-running DINOv2 every step (median of {len(ratios)} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
