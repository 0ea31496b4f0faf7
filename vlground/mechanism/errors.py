"""The one error type of :mod:`vlground.mechanism`."""
from __future__ import annotations

from vlground.errors import VlgroundError


class MechanismError(VlgroundError):
    """A model or an argument cannot be used by a mechanism function (one-line message)."""
