"""Errors the CLI turns into one-line messages (``vlground: error: <message>``, exit 2)."""
from __future__ import annotations


class VlgroundError(Exception):
    """A user-facing problem: bad input, a missing file, an unknown name.

    The message is one line and names the file or item and what is wrong, e.g.
    ``corpora/x/chunks.npy: truncated (expected 4096 int32 values, found 100)``.
    """


class InputError(VlgroundError):
    """Input data (a file, a folder, an option value) cannot be used."""
