"""Cost of probing one checkpoint of the demo's Transformer with every probe, before and after
the probe-layer refactor, measured in one run.

"Before" is the code at commit ``23b0cf8`` (the last commit before ``vlground/probes/``), checked
out as a git worktree; "after" is this checkout. Both probe the same checkpoint (a
``transformer-tiny`` run on the bundled corpus at the demo's chunk length, trained briefly by this
checkout) with ``behaviour,saliency,heads,ablation,lens`` through ``vlground probe --checkpoints
last``, each round in a fresh subprocess (one torch thread), into a
fresh output folder (``vlground``, ``vlground.adapters`` and ``vlground.datasets`` mounted from that
tree, so the installed checkout cannot leak in), with the checkpoint's cached tuned lens removed first (both versions fit and
cache it beside the checkpoint). The time is the ``vlground probe`` call inside the subprocess
(imports of torch and transformers excluded). Rounds alternate old and new; the ratio is the
median of the per-round ratios new / old; the CPU seconds of the probe process are printed too
(one torch thread: the work done, which other load on a shared machine barely changes).  For the
new version, the CPU time inside each probe's ``run`` is recorded and printed as its share of the
probe call's (median over rounds).

The old tree's subprocess can run under its own interpreter (``--old-tree DIR --old-python
DIR/.venv/bin/python``, a venv with that tree installed, so nothing of this checkout is imported).

The two versions do not do the same work: the new one identifies heads in the final model (here
the same checkpoint) and adds the gather-only ablation row; it reports items and rows so the
difference can be read. Options are each version's defaults.

    python scripts/bench/bench_probe_all.py [--rounds 5] [--old-ref 23b0cf8] [--files 60] [--steps 40]
        [--old-tree /tmp/old --old-python /tmp/old/.venv/bin/python]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBES = "behaviour,saliency,heads,ablation,lens"

#: run inside the subprocess: time only the probe call
DRIVER = r"""
import importlib.util, json, sys, time, types
from pathlib import Path

tree = Path(sys.argv[2])


def mount(name, folder):  # vlground, vlground.adapters, vlground.datasets from this tree only (not the installed one)
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    else:  # a folder without __init__.py (newer layout): a package over that folder
        mod = types.ModuleType(name)
        mod.__path__ = [str(folder)]
        sys.modules[name] = mod
    if "." in name:
        setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], mod)


for name, sub in (("vlground", "vlground"), ("vlground.adapters", "adapters"), ("vlground.datasets", "datasets")):
    mount(name, tree / sub)
import torch
torch.set_num_threads(1)
import transformers  # noqa: F401  (imported before the clock starts, like torch)
from vlground.cli import main
assert Path(sys.modules["vlground.cli"].__file__).is_relative_to(tree)
argv = json.loads(sys.argv[1])
spent = {}
if (tree / "vlground" / "probes" / "__init__.py").is_file():  # the probe layer: time each probe's run
    from vlground.probes import get_probe_class

    def timed(name, fn):
        def wrapper(*args):
            t = time.process_time()
            try:
                return fn(*args)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t
        wrapper.timed = True
        return wrapper

    for name in sys.argv[3].split(","):
        cls = get_probe_class(name)
        cls.run = timed(name, cls.run)
        owner = next((c for c in cls.__mro__ if "reference" in c.__dict__), None)
        ref = getattr(owner, "reference", None)
        if ref is not None and not getattr(ref[1], "timed", False):  # e.g. the heads identified once per run
            owner.reference = (ref[0], timed(f"reference {ref[0]}", ref[1]))
t0, c0 = time.perf_counter(), time.process_time()
rc = main(argv)
print("SECONDS", time.perf_counter() - t0, rc, time.process_time() - c0)
print("PROBES", json.dumps(spent))
"""


def probe_once(tree: Path, run: Path, out: Path, python: str = sys.executable) -> tuple[float, float, dict[str, float]]:
    """``(wall seconds, CPU seconds of one vlground probe of the run's last checkpoint with the code
    in tree, {probe: CPU seconds inside its run} (the probe layer only; empty before it))``."""
    for lens in run.glob("checkpoints/*/tuned-lens"):
        shutil.rmtree(lens)
    if out.exists():
        shutil.rmtree(out)
    argv = ["probe", "--adapter", "childes", "--run", str(run), "--out", str(out), "--probes", PROBES,
            "--checkpoints", "last", "--no-report", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([python, "-c", DRIVER, json.dumps(argv), str(tree), PROBES], cwd=tree, env=env, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("SECONDS")]
    shares = [x for x in proc.stdout.splitlines() if x.startswith("PROBES")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"probe with {tree} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    fields = line[-1].split()
    return float(fields[1]), float(fields[3]), (json.loads(shares[-1].split(" ", 1)[1]) if shares else {})


def describe(out: Path) -> str:
    """Items and rows of a results.json of either schema."""
    data = json.loads((out / "results.json").read_text())
    if data.get("version") == 2:
        beh = data["probes"].get("behaviour", {}).get("records", [{}])
        abl = data["probes"].get("ablation", {}).get("tables", {}).get("ablation", [])
        return f"items {beh[0].get('n_items') if beh else '?'}, ablation rows {[(r['head_type'], r['n_items']) for r in abl]}"
    recs = data.get("checkpoints", data.get("records", []))
    rec = recs[-1] if recs else {}
    abl = data.get("ablation", [])
    return f"items {rec.get('n_items', '?')}, ablation rows {[(r.get('head_type'), r.get('n_items')) for r in abl]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating old/new rounds (median of per-round ratios)")
    ap.add_argument("--old-ref", default="23b0cf8", help="the pre-refactor commit")
    ap.add_argument("--old-tree", default="", help="a checkout of --old-ref to use (default: a temporary git worktree)")
    ap.add_argument("--old-python", default=sys.executable,
                    help="the interpreter for the old tree (e.g. a venv with that tree installed); default this one")
    ap.add_argument("--files", type=int, default=60, help="generated transcripts for the corpus")
    ap.add_argument("--steps", type=int, default=40, help="training steps of the probed run")
    ap.add_argument("--chunk-len", type=int, default=512, help="corpus chunk length (the demo's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from vlground.datasets.chat_generator import build_default_corpus
    from vlground.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = Path(args.old_tree) if args.old_tree else tmp / "old"
        if not args.old_tree:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.old_ref], check=True, capture_output=True)
        try:
            corpus = build_default_corpus(tmp / "corpus", seed=0, n_files=args.files, chunk_len=args.chunk_len)
            run = train(TrainConfig(corpus=str(corpus), out=str(tmp / "run"), arch="transformer", size="tiny", seed=0, progress=False,
                                    overrides={"steps": args.steps, "batch_size": 8, "lr": 3e-3, "warmup_steps": 5,
                                               "checkpoint_every": args.steps, "checkpoint_dense_until": 0}))
            times: dict[str, list[float]] = {"old": [], "new": []}
            cpu: dict[str, list[float]] = {"old": [], "new": []}
            shares: list[dict[str, float]] = []
            python = {"old": args.old_python, "new": sys.executable}
            for k in range(args.rounds):
                for name, tree in (("old", old), ("new", ROOT)) if k % 2 == 0 else (("new", ROOT), ("old", old)):
                    seconds, cpu_s, per_probe = probe_once(tree, run, tmp / f"out-{name}", python[name])
                    times[name].append(seconds)
                    cpu[name].append(cpu_s)
                    if name == "new":
                        shares.append({p: s / cpu_s for p, s in per_probe.items()})
                print(f"round {k + 1}: old {times['old'][-1]:.1f} s ({cpu['old'][-1]:.1f} CPU s), "
                      f"new {times['new'][-1]:.1f} s ({cpu['new'][-1]:.1f} CPU s)", flush=True)
            ratios = [n / o for n, o in zip(times["new"], times["old"])]
            print(f"checkpoint: {run.name} step {args.steps}, transformer-tiny, chunk_len {args.chunk_len}, probes {PROBES}, 1 torch thread")
            print(f"old ({args.old_ref}): {describe(tmp / 'out-old')}")
            print(f"new (this checkout): {describe(tmp / 'out-new')}")
            print(f"seconds per checkpoint, median of {args.rounds}: old {statistics.median(times['old']):.1f}, "
                  f"new {statistics.median(times['new']):.1f}")
            print(f"ratio new / old (median of per-round ratios): {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
            cpu_ratios = [n / o for n, o in zip(cpu["new"], cpu["old"])]
            print(f"CPU seconds of the probe process, median: old {statistics.median(cpu['old']):.1f}, new "
                  f"{statistics.median(cpu['new']):.1f}; ratio {statistics.median(cpu_ratios):.2f}x "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in cpu_ratios)})")
            if shares and shares[0]:
                parts = {p: statistics.median(s.get(p, 0.0) for s in shares) for p in shares[0]}
                rest = statistics.median(1 - sum(s.values()) for s in shares)
                print("new: share of the CPU time inside each probe's run and each reference (e.g. the heads identified "
                      "once per run; median over rounds; what first needs the shared saliency pass pays for it): "
                      + ", ".join(f"{p} {v:.0%}" for p, v in parts.items())
                      + f", the rest (loading the checkpoint, building items, writing results) {rest:.0%}")
        finally:
            if not args.old_tree:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


if __name__ == "__main__":
    main()
