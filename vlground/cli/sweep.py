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
    import os

    from vlground.errors import InputError
    from vlground.sweep import driver, schema, spec

    from vlground.sweep.schema import SweepProblems

    if args.num_cpus is not None and args.num_cpus < 1:
        raise InputError(f"--num-cpus {args.num_cpus}: must be at least 1")
    sweep = spec.load(spec_path(args.spec), args.out)
    if args.address is None:  # a local instance: the CPUs a task asks for must exist here
        local = schema.problems(sweep.data, sweep.path, local_cpus=args.num_cpus or os.cpu_count())
        if local:
            raise SweepProblems(local)
    missing = spec.missing_inputs(sweep)
    if args.dry_run:
        driver.describe(sweep, sys.stdout)
        if missing:
            raise SweepProblems(missing)
        return 0
    if missing:  # before any task starts
        raise SweepProblems(missing)
    outcome = driver.run_sweep(sweep, address=args.address, num_cpus=args.num_cpus)
    driver.summary(outcome, sys.stderr)
    return 0 if outcome.ok else 1
