"""``vlground list``: what is installed and bundled, by the names the other commands take.

    vlground list              # adapters, probes, architectures x sizes, bundled sweeps and templates
    vlground list adapters     # one kind only (adapters, probes, archs, sweeps, templates)

Adapters and probes are listed from their registries (entry points included, so a plugin's appear);
their classes are imported to show what they take (model types, capabilities).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import resources

HELP = "list adapters (with model types), probes, architectures and sizes, bundled sweeps and templates"

KINDS = ("adapters", "probes", "archs", "sweeps", "templates")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=KINDS, help="list one kind only (default: all)")


def adapters() -> list[tuple[str, str]]:
    """``[(name, what it takes)]`` for every registered adapter."""
    from vlground.engine.registry import get_adapter_class, known_adapters
    from vlground.errors import VlgroundError

    out = []
    for name in known_adapters():
        try:
            cls = get_adapter_class(name)
        except VlgroundError as exc:  # a broken plugin is listed, not fatal
            out.append((name, f"(cannot load: {exc})"))
            continue
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        first = doc[0].strip().split(": ", 1)[-1].replace("``", "") if doc else ""
        types = getattr(cls, "model_types", ())
        out.append((name, (f"model types {', '.join(types)}; " if types else "") + first))
    return out


def probes() -> list[tuple[str, str]]:
    """``[(name, what it measures)]`` for every registered probe."""
    from vlground.errors import VlgroundError
    from vlground.probes import get_probe_class, known_probes

    out = []
    for name in known_probes():
        try:
            cls = get_probe_class(name)
        except VlgroundError as exc:
            out.append((name, f"(cannot load: {exc})"))
            continue
        needs = ", ".join(sorted(str(getattr(c, "value", c)) for c in cls.needs))
        doc = (cls.doc or (cls.__doc__ or "").strip().splitlines()[0] if (cls.doc or cls.__doc__) else "").strip()
        out.append((name, doc + (f" (needs: {needs})" if needs else "")))
    return out


def archs() -> list[tuple[str, str]]:
    """``[(arch, sizes with their layers x width)]`` from the bundled config files (no torch)."""
    from vlground.train.config import SIZES
    from vlground.train.models import ARCHS, WIDTH_KEYS

    folder = resources.files("vlground") / "configs"
    out = []
    for arch in ARCHS:
        sizes = []
        for size in SIZES:
            f = folder / f"{arch}-{size}.json"
            if not f.is_file():
                continue
            model = json.loads(f.read_text(encoding="utf-8")).get("model", {})
            layers = model.get("n_layer", model.get("num_hidden_layers", model.get("num_layers", "?")))
            width = model.get(WIDTH_KEYS.get(arch, ""), model.get("hidden_size", "?"))
            sizes.append(f"{size} ({layers} layers x {width})")
        out.append((arch, ", ".join(sizes) or "(no bundled config)"))
    return out


def sweeps() -> list[tuple[str, str]]:
    """``[(name, first comment line)]`` of the bundled sweep files."""
    from vlground.cli.sweep import bundled_sweeps, bundled_text

    out = []
    for name in bundled_sweeps():
        first = next((ln.lstrip("# ").strip() for ln in bundled_text(name).splitlines() if ln.startswith("#")), "")
        out.append((name, first))
    return out


def templates() -> list[tuple[str, str]]:
    """``[(file, what it holds)]`` of the bundled probe templates (``--templates``)."""
    out = []
    folder = resources.files("vlground") / "templates"
    for f in sorted(folder.iterdir(), key=lambda f: f.name):
        if f.name.endswith(".json"):
            data = json.loads(f.read_text(encoding="utf-8"))
            counts = ", ".join(f"{len(v)} {k}" for k, v in data.items() if isinstance(v, list))
            out.append((f.name, counts))
    return out


def run(args: argparse.Namespace) -> int:
    lists = {"adapters": ("adapters (--adapter NAME)", adapters), "probes": ("probes (--probes a,b)", probes),
             "archs": ("architectures and sizes (train --arch A --size S)", archs),
             "sweeps": ("bundled sweeps (vlground sweep NAME; vlground sweep export NAME > my.yaml)", sweeps),
             "templates": ("bundled templates (probe --templates)", templates)}
    for kind in ([args.kind] if args.kind else KINDS):
        title, fn = lists[kind]
        rows = fn()
        print(f"{title}:")
        width = max((len(n) for n, _ in rows), default=0)
        for name, what in rows:
            print(f"  {name:<{width}}  {what}")
    return 0
