"""Sweeps: a grid of corpora x architectures x seeds run as tasks on Ray (``vlground sweep``).

* :mod:`vlground.sweep.spec`: the sweep file (YAML) and its expansion into tasks
  (build-corpus -> train -> probe per run);
* :mod:`vlground.sweep.tasks`: one task in a Ray worker (lock, log file, done marker);
* :mod:`vlground.sweep.driver`: submit to Ray, follow progress, summarise failures;
* :mod:`vlground.sweep.report`: one combined report over the grid.

Ray does the scheduling, placement and retries; vlground keeps no queue or pool of its own.
"""
from __future__ import annotations

__all__ = ["load", "run_sweep", "describe", "summary"]


def __getattr__(name: str):
    if name == "load":
        from vlground.sweep.spec import load

        return load
    if name in ("run_sweep", "describe", "summary"):
        from vlground.sweep import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'vlground.sweep' has no attribute {name!r}")
