"""Benchmark: items/s and peak memory of the VLM adapters (scoring, saliency rows) on whatever device
it finds, and the saliency memory per item of the 7B models computed from their shapes.

By default each adapter (``llava15``, ``qwen2vl``, ``llava_next``) runs on a tiny random model built
into a temporary folder, with a grey-box mismatch folder (``vlground.testing.grey_box_mismatch``);
``--adapter NAME --model DIR_OR_HUB_ID --mismatch DIR`` times a real checkpoint instead (on a GPU:
``--dtype bfloat16``, ``--device-map auto`` to shard). Prints, per adapter, items/s of
``target_logprobs`` and of ``Adapter.saliency`` (all heads, predicted row only), the mean sequence
and image-token lengths, and the peak memory (``torch.cuda.max_memory_allocated`` on a GPU, the
process's peak RSS on the CPU). One run; ratios between rows are comparable, absolute numbers are
those of this machine.

    python scripts/bench/bench_vlm.py [--adapter qwen2vl] [--device auto] [--items 8] [--batch-size 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from vlground.datasets.mismatch import BUNDLED_IMAGES
from vlground.engine.registry import get_adapter_class
from vlground.probes.common import batched
from vlground.testing import grey_box_mismatch

#: text-decoder shapes of the 7B checkpoints (their public config.json): layers, heads, hidden, MLP width, vocabulary
SHAPES_7B = {
    "llava-hf/llava-1.5-7b-hf": dict(layers=32, heads=32, hidden=4096, mlp=11008, vocab=32064, params=7.06e9),
    "Qwen/Qwen2-VL-7B-Instruct": dict(layers=28, heads=28, hidden=3584, mlp=18944, vocab=152064, params=8.29e9),
    "llava-hf/llava-v1.6-mistral-7b-hf": dict(layers=32, heads=32, hidden=4096, mlp=14336, vocab=32064, params=7.57e9),
}


def saliency_bytes_per_item(layers: int, heads: int, hidden: int, mlp: int, seq: int, dtype_bytes: int = 2, **_) -> int:
    """Activation memory one item adds to the saliency pass (eager attention, one backward, predicted row kept).

    Per decoder layer the graph keeps the attention probabilities twice (float32 softmax output and
    its cast, ``4 + dtype_bytes`` per entry of ``[heads, seq, seq]``), the MLP's four ``[seq, mlp]``
    tensors and about six ``[seq, hidden]`` ones; ``autograd.grad`` then returns one ``[heads, seq,
    seq]`` gradient per layer. Weights are extra (``params x dtype_bytes``, once).
    """
    per_layer = (4 + dtype_bytes) * heads * seq * seq + 4 * dtype_bytes * seq * mlp + 6 * dtype_bytes * seq * hidden
    return layers * (per_layer + dtype_bytes * heads * seq * seq)


def peak_memory(cuda: bool) -> float:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def tiny_model(name: str, folder: Path) -> str:
    if name == "llava15":
        from vlground.vision.tiny_llava import save_tiny_llava as save
    elif name == "qwen2vl":
        from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl as save
    else:
        from vlground.vision.tiny_llava_next import save_tiny_llava_next as save
    return str(save(folder / f"tiny-{name}"))


def bench(name: str, args, tmp: Path) -> None:
    model = args.model or tiny_model(name, tmp)
    mismatch = args.mismatch or grey_box_mismatch(tmp / "mm", args.annotations, args.images)
    opts = {"model": model, "images": args.images, "annotations": args.annotations, "mismatch": mismatch,
            "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size, "device_map": args.device_map}
    adapter = get_adapter_class(name).from_options(opts)
    t0 = time.perf_counter()
    loaded = adapter.load(adapter.checkpoints()[0])
    items = [it for it in adapter.items(loaded) if it.condition == "match"][: args.items]
    load_s = time.perf_counter() - t0
    cuda = loaded.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batches = [adapter.batch(loaded, chunk) for chunk in batched(items, args.batch_size)]  # processor time not timed
    adapter.target_logprobs(loaded, batches[0])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for b in batches:
        adapter.target_logprobs(loaded, b)
    sync()
    score = len(items) / (time.perf_counter() - t0)
    score_mem = peak_memory(cuda)
    t0 = time.perf_counter()
    for b in batches:
        adapter.saliency(loaded, b)
    sync()
    sal = len(items) / (time.perf_counter() - t0)
    seq = sum(int(b.model_inputs["attention_mask"].sum()) for b in batches) / len(items)
    img = sum(int(b.env_span.sum()) for b in batches) / len(items)
    unit = "GiB CUDA" if cuda else "GiB RSS"
    print(f"{name:10s} {loaded.device.type}:{str(loaded.model.dtype)[6:]:8s} {len(items):3d} items  seq {seq:6.0f}  image tokens "
          f"{img:6.0f}  score {score:8.2f} items/s  saliency {sal:7.2f} items/s  peak {score_mem:6.2f} / "
          f"{peak_memory(cuda):6.2f} {unit} (score / +saliency)  load {load_s:5.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", action="append", help="adapter(s) to time (default: llava15, qwen2vl, llava_next)")
    ap.add_argument("--model", help="checkpoint for a single --adapter (default: a tiny random one)")
    ap.add_argument("--mismatch", type=Path, help="build-mismatch folder (default: grey boxes)")
    ap.add_argument("--images", type=Path, default=BUNDLED_IMAGES)
    ap.add_argument("--annotations", type=Path, default=BUNDLED_IMAGES / "instances.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device-map", default=None)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--items", type=int, default=8, help="match items timed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (a busy small machine is faster with 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.adapter or ["llava15", "qwen2vl", "llava_next"]
    if args.model and len(names) != 1:
        ap.error("--model needs exactly one --adapter")
    for name in names:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            bench(name, args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nsaliency activations per item at 7B (bf16, from shapes; weights extra):")
    for model, s in SHAPES_7B.items():
        for seq in ((600,) if "llava-1.5" in model else (420, 1300) if "Qwen" in model else (2200,)):
            gib = saliency_bytes_per_item(seq=seq, **s) / 2**30
            print(f"  {model:36s} seq {seq:5d}: {gib:5.1f} GiB/item  (+ weights {s['params'] * 2 / 2**30:4.1f} GiB)")


if __name__ == "__main__":
    main()
