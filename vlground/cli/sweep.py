"""``vlground sweep SWEEP.yaml``: a grid of corpora x architectures x seeds as tasks on Ray.

    vlground sweep sweep.yaml                  # a local Ray instance on this machine's cores/GPUs
    vlground sweep sweep.yaml --address auto   # an existing Ray cluster
    vlground sweep sweep.yaml --dry-run        # the task graph, what is done, what is left
    vlground sweep export paper-text > my.yaml # a bundled sweep file, to edit and run as my.yaml

Rerunning after a crash or Ctrl-C runs only what is missing. Exit status 1 when a task failed.
Bundled sweep files: ``paper-text``, ``paper-vision``, ``emergence``, ``emergence-cpu``, ``demo`` (a name without ``.yaml``).
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from vlground.errors import InputError

HELP = "run a grid of corpora x architectures x seeds as tasks on Ray (local or a cluster)"


def bundled_sweeps() -> list[str]:
    """Names of the sweep files shipped with vlground (``vlground/configs/sweeps/*.yaml``)."""
    folder = resources.files("vlground") / "configs" / "sweeps"
    return sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))


def bundled_text(name: str) -> str:
    """The text of bundled sweep ``name``; InputError listing the bundled names otherwise."""
    if name not in bundled_sweeps():
        raise InputError(_unknown(name))
    return (resources.files("vlground") / "configs" / "sweeps" / f"{name}.yaml").read_text(encoding="utf-8")


def _unknown(name: str) -> str:
    import difflib

    known = bundled_sweeps()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"{name}: no such sweep file and no bundled sweep of that name ({hint}bundled: {', '.join(known)}; "
            "vlground sweep export NAME > my.yaml copies one to edit)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SWEEP", help="sweep file (YAML), a bundled sweep (paper-text, paper-vision, emergence, emergence-cpu, demo), "
                   "or 'export' to print a bundled sweep: vlground sweep export NAME > my.yaml")
    p.add_argument("name", nargs="?", metavar="NAME", help="with export: the bundled sweep to print")
    p.add_argument("--out", type=Path, help="output folder (default: the sweep file's out:)")
    p.add_argument("--address", help="Ray cluster address (auto, ray://host:10001, host:6379); default: a local instance")
    p.add_argument("--num-cpus", type=int, help="local instance: CPUs Ray may use (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the task graph, what is done and what is left; run nothing")


def spec_path(name: str) -> Path:
    """A sweep file path, or the bundled ``vlground/configs/sweeps/<name>.yaml``; an unknown name
    raises InputError listing the bundled sweeps."""
    p = Path(name)
    if p.exists():
        return p
    if name in bundled_sweeps():
        return Path(str(resources.files("vlground") / "configs" / "sweeps" / f"{name}.yaml"))
    if p.suffix in (".yaml", ".yml"):
        raise InputError(f"{p}: no such sweep file (bundled sweeps: {', '.join(bundled_sweeps())})")
    raise InputError(_unknown(name))


def run(args: argparse.Namespace) -> int:
    import os

    if args.spec == "export" and not Path("export").exists():
        if not args.name:
            raise InputError(f"sweep export: which one? (bundled: {', '.join(bundled_sweeps())})")
        sys.stdout.write(bundled_text(args.name))
        return 0
    if args.name:
        raise InputError(f"sweep: unexpected argument {args.name!r} (one SWEEP; to print a bundled one: vlground sweep export NAME)")

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
