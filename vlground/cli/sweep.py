"""``vlground sweep SWEEP.yaml``: a grid of corpora x architectures x seeds as tasks on Ray.

    vlground sweep sweep.yaml                  # a local Ray instance on this machine's cores/GPUs
    vlground sweep sweep.yaml --address auto   # an existing Ray cluster
    vlground sweep sweep.yaml --dry-run        # the task graph, what is done, what is left

Rerunning after a crash or Ctrl-C runs only what is missing. Exit status 1 when a task failed.
Bundled sweep files: ``paper-text``, ``paper-vision``, ``emergence``, ``emergence-cpu``, ``demo`` (a name without ``.yaml``).
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

HELP = "run a grid of corpora x architectures x seeds as tasks on Ray (local or a cluster)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SWEEP", help="sweep file (YAML), or a bundled one: paper-text, paper-vision, emergence, emergence-cpu, demo")
    p.add_argument("--out", type=Path, help="output folder (default: the sweep file's out:)")
    p.add_argument("--address", help="Ray cluster address (auto, ray://host:10001, host:6379); default: a local instance")
    p.add_argument("--num-cpus", type=int, help="local instance: CPUs Ray may use (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the task graph, what is done and what is left; run nothing")


def spec_path(name: str) -> Path:
    """A sweep file path, or the bundled ``vlground/configs/sweeps/<name>.yaml``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return Path(str(resources.files("vlground") / "configs" / "sweeps" / f"{name}.yaml"))


def run(args: argparse.Namespace) -> int:
    from vlground.sweep import driver, spec

    sweep = spec.load(spec_path(args.spec), args.out)
    if args.dry_run:
        driver.describe(sweep, sys.stdout)
        return 0
    outcome = driver.run_sweep(sweep, address=args.address, num_cpus=args.num_cpus)
    driver.summary(outcome, sys.stderr)
    return 0 if outcome.ok else 1
