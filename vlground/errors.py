"""Errors the CLI turns into one-line messages (``vlground: error: <message>``, exit 2)."""
from __future__ import annotations


class VlgroundError(Exception):
    """A user-facing problem: bad input, a missing file, an unknown name.

    The message is one line and names the file or item and what is wrong, e.g.
    ``corpora/x/chunks.npy: truncated (expected 4096 int32 values, found 100)``.
    """


class InputError(VlgroundError):
    """Input data (a file, a folder, an option value) cannot be used."""


def require(module: str, extra: str, what: str) -> None:
    """Raise a one-line :class:`InputError` naming the extra to install when ``module`` is missing,
    e.g. ``require("diffusers", "vision", "build-mismatch --inpaint")``."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{what} needs {module}, an optional dependency: pip install \"vlground[{extra}]\"")
