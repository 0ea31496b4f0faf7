"""Benchmark: ``vlground <command> --help`` against ``python -c "import numpy"`` (issue 23's target: under 4x).

Each round runs, in a fresh interpreter each, ``import numpy`` and then every command's
``--help`` (and ``vlground --help``, ``--version``, and the childes adapter's own flags), in one
interleaved order, so machine load hits all of them alike. Reported: the median wall time of each over the rounds and its ratio to the
median ``import numpy``; the exit status is 1 when a ratio reaches ``--limit``. Interpreter
start-up is in both sides of every ratio (a user types the command; numpy's figure is the time
Python takes to start and import numpy).

    python scripts/bench/bench_help.py [--rounds 10 --limit 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def commands() -> dict[str, list[str]]:
    """name -> argv after ``python``: the baseline, the top level and every subcommand's ``--help``."""
    from vlground.cli import COMMANDS

    out = {"import numpy": ["-c", "import numpy"], "vlground --version": ["-m", "vlground", "--version"],
           "vlground --help": ["-m", "vlground", "--help"]}
    out.update({f"vlground {c} --help": ["-m", "vlground", c, "--help"] for c in COMMANDS})
    out["vlground probe --adapter childes --help"] = ["-m", "vlground", "probe", "--adapter", "childes", "--help"]
    out["vlground check-adapter childes --help"] = ["-m", "vlground", "check-adapter", "childes", "--help"]
    return out


def time_once(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return dt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (median over them)")
    parser.add_argument("--limit", type=float, default=4.0, help="largest acceptable ratio to import numpy")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmds = commands()
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for name, a in cmds.items():  # one warm-up each (file-system caches), not counted
        time_once(a, env)
    for _ in range(args.rounds):
        for name, a in cmds.items():
            times[name].append(time_once(a, env))
    base = statistics.median(times["import numpy"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{args.rounds} interleaved rounds; load average {', '.join(f'{x:.1f}' for x in load) if load else '?'}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'command':<44} {'median s':>9} {'x numpy':>8}")
    worst = 0.0
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = med / base
        if name != "import numpy":
            worst = max(worst, ratio)
        print(f"{name:<44} {med:9.3f} {ratio:8.2f}")
    print(f"largest ratio: {worst:.2f} (limit {args.limit:g})")
    return 0 if worst < args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
