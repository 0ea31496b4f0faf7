"""How numbers are written, in one place: the terminal, key findings, the claims table and every
report table use these functions, so the same value reads the same everywhere.

Rules (significant digits, not decimals, so 0.000116 and 9.93e-05 never sit side by side):

* :func:`num`: 3 significant digits; scientific (``1.23e-04``) below 0.001 in magnitude;
  whole numbers from 1000 up (``7756``, never ``7755.800``); integers as integers;
* :func:`signed`: :func:`num` with a sign (effects, differences: ``+0.123``, ``-1.2e-04``);
* :func:`pval`: 2 significant digits (``0.037``, ``0.37``, ``1``), ``< 1e-04`` below 0.0001;
* :func:`p_text`: ``p = 0.037`` / ``p < 1e-04`` in running text;
* :func:`ci`: ``[low, high]`` with :func:`signed`;
* :func:`pct`: a share as a percentage (``37%``).

Missing values (None, NaN) read ``–`` (:data:`MISSING`). Nothing here imports numpy or torch.
"""
from __future__ import annotations

import math
import numbers

#: how a missing value reads
MISSING = "–"
#: p-values below this read "< 1e-04" (more digits would claim a precision no test here has)
P_FLOOR = 1e-4


def _missing(x) -> bool:
    return x is None or (isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isfinite(float(x)))


def num(x, sig: int = 3) -> str:
    """A number with ``sig`` significant digits (see the module docstring)."""
    if _missing(x):
        return MISSING
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:.0f}"
    if a < 1e-3:
        return f"{x:.{sig - 1}e}"
    digits = max(0, sig - 1 - math.floor(math.log10(a)))
    text = f"{x:.{digits}f}"
    if float(text) != 0 and abs(float(text)) >= 10 ** (sig - 1) and "." in text:  # rounding carried (99.96 -> 100.0)
        text = text.rstrip("0").rstrip(".")
    return text


def signed(x, sig: int = 3) -> str:
    """:func:`num` with an explicit sign (``+0.123``; zero reads ``0``)."""
    text = num(x, sig)
    if text in (MISSING, "0") or text.startswith("-"):
        return text
    return "+" + text


def pval(p) -> str:
    """A p-value: 2 significant digits, ``< 1e-04`` below :data:`P_FLOOR`, ``1`` at one."""
    if _missing(p):
        return MISSING
    p = float(p)
    if p < P_FLOOR:
        return f"< {P_FLOOR:.0e}"
    if p >= 0.995:
        return "1"
    return num(p, 2)


def p_text(p, label: str = "p") -> str:
    """``p = 0.037``, ``p < 1e-04`` or ``p = –``: a p-value in running text."""
    text = pval(p)
    return f"{label} {text}" if text.startswith("<") else f"{label} = {text}"


def ci(low, high, sig: int = 3) -> str:
    """An interval ``[low, high]``; when either end is written in scientific notation, so is the
    other (``[+9.12e-04, +1.04e-03]``, never ``[+9.12e-04, +0.00104]``)."""
    lo, hi = signed(low, sig), signed(high, sig)
    if ("e" in lo) != ("e" in hi) and MISSING not in (lo, hi):
        lo, hi = (t if "e" in t else f"{float(v):+.{sig - 1}e}" for t, v in ((lo, low), (hi, high)))
    return f"[{lo}, {hi}]"


def pct(share, sig: int = 2) -> str:
    """A share in [0, 1] as a percentage."""
    if _missing(share):
        return MISSING
    return f"{num(100 * float(share), sig)}%"


def cell(x) -> str:
    """A table cell of any type: numbers through :func:`num` (p-value columns go through
    :func:`pval` in the table code, which knows the column), text as is (not escaped)."""
    if _missing(x):
        return MISSING
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return num(x)
    return str(x)
