"""Benchmark: the llava15 probes, seconds per item for scoring (behaviour) and for saliency rows.

On a tiny random LLaVA by default (built into a temporary folder, with a mismatch folder made by
the tiny SD2 pipeline); ``--model`` / ``--mismatch`` point at a real checkpoint and a real
build-mismatch folder instead (GPU: ``--device cuda --dtype float16``). Prints the number of
items, sequence length, seconds per item of ``target_logprobs`` and of ``attention_saliency``
with ``predict_row_only``, and the peak CUDA memory when on a GPU.

    python scripts/bench/bench_llava.py [--model DIR --mismatch DIR --device cpu --dtype auto --batch-size 2 --items 8 --threads 1]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from vlground.adapters.llava15 import Llava15Adapter
from vlground.datasets.mismatch import BUNDLED_IMAGES, MismatchConfig, build_mismatch
from vlground.probes.base import ProbeContext
from vlground.probes.boxheads import box_saliency
from vlground.probes.common import batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--mismatch", type=Path)
    ap.add_argument("--images", type=Path, default=BUNDLED_IMAGES)
    ap.add_argument("--annotations", type=Path, default=BUNDLED_IMAGES / "instances.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--items", type=int, default=8, help="match items timed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (a busy small machine is faster with 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="bench-llava-"))
    if args.model is None:
        from vlground.vision.tiny_llava import save_tiny_llava

        args.model = str(save_tiny_llava(tmp / "tiny-llava"))
    if args.mismatch is None:
        from vlground.vision.tiny import save_tiny_inpaint_pipeline

        sd = save_tiny_inpaint_pipeline(tmp / "tiny-sd")
        cfg = MismatchConfig(annotations=args.annotations, images=args.images, out=tmp / "mm", model=str(sd),
                             steps=2, resolution=32, guidance_scale=1.0, device="cpu", progress=False)
        build_mismatch(cfg)
        args.mismatch = cfg.out

    adapter = Llava15Adapter.from_options({"model": args.model, "images": args.images, "annotations": args.annotations,
                                           "mismatch": args.mismatch, "device": args.device, "dtype": args.dtype,
                                           "batch_size": args.batch_size})
    loaded = adapter.load(adapter.checkpoints()[0])
    items = [it for it in adapter.items(loaded) if it.condition == "match"][: args.items]
    cuda = loaded.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    adapter.target_logprobs(loaded, adapter.batch(loaded, items[:1]))  # warm-up
    sync()
    t0 = time.perf_counter()
    for chunk in batched(items, args.batch_size):
        adapter.target_logprobs(loaded, adapter.batch(loaded, chunk))
    sync()
    score = (time.perf_counter() - t0) / len(items)
    t0 = time.perf_counter()
    box_saliency(ProbeContext(adapter, loaded, items), len(items))
    sync()
    sal = (time.perf_counter() - t0) / len(items)
    seq = adapter.batch(loaded, items[:1]).model_inputs["input_ids"].shape[1]
    print(f"model {args.model} on {loaded.device} ({loaded.model.dtype}), {len(items)} items of ~{seq} tokens, batch {args.batch_size}")
    print(f"score (target_logprobs): {score * 1e3:.1f} ms/item")
    print(f"saliency rows (all heads, one backward): {sal * 1e3:.1f} ms/item")
    if cuda:
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
