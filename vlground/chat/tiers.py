"""Dependent-tier checks: known tier names, empty tiers, ``%mor``/``%gra`` syntax and alignment
with the main tier, ``%pho``/``%sin`` word counts.

Alignment counts come from the main-tier pass (:mod:`vlground.chat.maintier`) or, for common
markup, from :func:`vlground.chat.fast.common_counts`.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from vlground.chat.reader import RawUtterance

DEPENDENT_TIERS = frozenset("""
act add alt cod coh com def eng err exp fac flo gls gpx gra grt int mod mor par pho sin sit
spa tim wor ort pht modsyl phosyl phoaln trn umor ugra lan spn xsyn
""".split())
_DEPRECATED_TIERS = frozenset({"xpho", "xmod", "xmor", "xgra"})
_PLAIN_TIERS = DEPENDENT_TIERS - _DEPRECATED_TIERS
_ALIGNED = frozenset({"mor", "gra", "pho", "sin"})  # tiers checked further (syntax, alignment)
_DEP_UNITS = re.compile(r"\u2039[^\u203a]*\u203a|\u3014[^\u3015]*\u3015|\S+")
_MOR_SIMPLE = re.compile(r"(?:[^|\s~$+]+\|[^|\s~+]+(?:~[^|\s~$+]+\|[^|\s~+]+)* |, )*[.?!]")
_MOR_TERMINATORS = frozenset({".", "?", "!", "+...", "+/.", "+//.", "+/?", "+!?", "+\"/.", "+\".",
                              "+..?", "+.", "+//?"})
_CODES_AND_BULLETS = re.compile(r"\[[^\]]*\]|\x15[^\x15]*\x15")
_GRA_ITEM = re.compile(r"(\d+)\|(\d+)\|([A-Za-z][\w:\-]*)")
_MOR_PUNCT = frozenset({".", "?", "!", ",", "+...", "+/.", "+//.", "+/?", "+!?", "+\"/.", "+\".",
                        "+..?", "+.", "\u201e", "\u2021", "cm|cm", "end|end", "beg|beg"})


def check_dependents(add: Callable[..., None], u: "RawUtterance",
                     counts: tuple[int | None, int | None]) -> None:
    """Check the dependent tiers of one utterance; ``counts`` = (main-tier items aligned to
    ``%mor``, words aligned to ``%pho``/``%sin``), None where not counted."""
    mor_main, pho_main = counts
    tiers = u.tiers
    for name, value in tiers.items():
        if name in _PLAIN_TIERS and value and not value.isspace():
            continue  # a known tier, not empty, not deprecated: nothing to report
        line = u.tier_lines[name]
        if name not in DEPENDENT_TIERS and not name.startswith("x"):
            add(line, "E605", f"unknown dependent tier %{name}")
        if not value.strip():
            add(line, "E756", f"dependent tier %{name} is empty")
        elif name in _DEPRECATED_TIERS:
            add(line, "W602", f"deprecated tier %{name} (use %{name[1:]})", "warning")
    if _ALIGNED.isdisjoint(tiers):
        return
    mor = tiers.get("mor")
    chunks = 0
    if mor is not None and mor.strip():
        line = u.tier_lines["mor"]
        items = mor.split()
        simple = _MOR_SIMPLE.fullmatch(" ".join(items)) is not None
        if simple:
            chunks = len(items) + mor.count("~")
        for item in ([] if simple else items):
            if item in _MOR_PUNCT:
                chunks += 1
                continue
            for piece in item.split("~"):
                chunks += 1
                if not _mor_ok(piece.lstrip("$")):
                    add(line, "E702", f"%mor item {item!r} is not pos|stem")
                    break
        if items[-1] in _MOR_TERMINATORS:
            last = _CODES_AND_BULLETS.sub(" ", u.text).split()[-1:]
            if last and last[0] in _MOR_TERMINATORS and last[0] != items[-1]:
                add(line, "E716", f"%mor ends in {items[-1]!r}, the main tier in {last[0]!r}")
        if mor_main is not None and mor_main != len(items):
            code = "E705" if mor_main > len(items) else "E706"
            add(line, code, f"main tier has {mor_main} alignable items, %mor has {len(items)}")
    gra = tiers.get("gra")
    if gra is not None and gra.strip():
        line = u.tier_lines["gra"]
        if mor is None:
            add(line, "E604", "%gra without %mor")
        _gra(add, line, gra.split(), chunks if mor is not None else None)
    pho = tiers.get("pho")
    if pho is not None and "*" in pho:
        add(u.tier_lines["pho"], "E365", "'*' in %pho")
    if "\u3014" in u.text or "\u2039" in u.text:  # grouped words align as one: not counted
        return
    for name, few, many in (("pho", "E714", "E715"), ("sin", "E718", "E719")):
        value = tiers.get(name)
        if value is None or pho_main is None or not value.strip():
            continue
        n = len(_DEP_UNITS.findall(value))
        if n != pho_main:
            add(u.tier_lines[name], few if n < pho_main else many,
                     f"main tier has {pho_main} words, %{name} has {n} items")


def _gra(add: Callable[..., None], line: int, items: list[str], chunks: int | None) -> None:
    if chunks is not None and chunks != len(items):
        add(line, "E720", f"%mor has {chunks} chunks, %gra has {len(items)} relations")
    heads: list[int] = []
    found = _GRA_ITEM.findall(" ".join(items))
    if len(found) == len(items) and all(int(i) == k for k, (i, _, _) in enumerate(found, 1)):
        heads = [int(h) for _, h, _ in found]  # fast path: well-formed and sequential
        items = []
    for k, item in enumerate(items, 1):
        m = _GRA_ITEM.fullmatch(item)
        if m is None:
            parts = item.split("|")
            if len(parts) != 3 or not parts[2]:
                code = "E711"
            elif not parts[0] or not parts[1]:
                code = "E709"
            else:
                code = "E710"
            add(line, code, f"%gra item {item!r} is not index|head|relation")
            return
        if int(m.group(1)) != k:
            add(line, "E721", f"%gra indices not sequential: expected {k}, found {m.group(1)}")
            return
        heads.append(int(m.group(2)))
    n = len(heads)
    if any(h > n for h in heads):
        add(line, "E713", f"%gra head index out of range (1..{n})")
        return
    if 0 not in heads:
        add(line, "E722", "%gra has no ROOT (head 0)")
    reaches_root = [False] * (n + 1)  # index 0 is the root itself
    reaches_root[0] = True
    for k in range(1, n + 1):  # follow heads; a path longer than n is a cycle
        path, h = [], k
        while not reaches_root[h] and len(path) <= n:
            path.append(h)
            h = heads[h - 1]
        if not reaches_root[h]:
            add(line, "E724", "%gra has a circular dependency")
            return
        for j in path:
            reaches_root[j] = True


def _mor_ok(piece: str) -> bool:
    pos, bar, rest = piece.partition("|")
    if not pos or not bar or not rest:
        return False
    if rest.startswith("+"):
        return all(_mor_ok(part) for part in rest[1:].split("+"))
    return "|" not in rest

