"""Image-token geometry read from the model itself, to check an adapter's ``image_layout`` and ``env_mask``.

The painted-box check of :mod:`vlground.testing` reads both the painted cell's brightness and
``env_mask`` through the adapter's own layout, so a layout one row off, tiles in the wrong order or a
view left out cancel out. This check asks the model instead:

1. Every attention module of the vision side (the modules whose class name ends in ``Attention``
   outside the language model) returns zeros, inside a context manager: each image feature then
   depends only on its own patch (or merged cell: Qwen2-VL's 2x2 merger, Idefics3's and InternVL's
   pixel shuffle and Gemma 3's pooling are local), plus position embeddings.
2. The language model's input (the hidden states entering decoder layer 0, captured by a hook that
   stops the pass there) is read for an all-black and an all-white image of the item's size:
   positions whose input differs are the **image-dependent positions** ``D``. None at all: the image
   pathway is dead (an all-zero projection).
3. ``D`` must lie inside the layout's views (a view missing from ``image_layout`` leaves positions out).
4. Per view, a random pattern of the layout's cells is painted white (each cell's preimage in
   original pixels through the view's ``to_view``); a position's **whiteness** is the projection
   ``<e - e_black, e_white - e_black> / |e_white - e_black|^2`` of its input. The layout says which
   cells are white; the model says which positions are (whiteness > 0.5). Their agreement over
   the cells that lie wholly inside the image is ~1 for a correct layout and ~0.5 for one that puts
   the cells at the wrong positions (a row off, tiles in another order, a misplaced view).
5. Each item's box, painted white on black: agreement of ``env_mask`` with the model's white
   positions over ``D`` (reported; box edges cut cells, so it is below 1 for a correct adapter).

The references and patterns are run through the adapter's own ``batch`` (so through the real
processor and ``model_inputs``); only the reading of which position shows what comes from the model.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)

#: agreement of a view's cell pattern below which the layout fails
MIN_AGREEMENT = 0.9


class _Stop(Exception):
    """Raised by the capture hook once decoder layer 0's input is read (the rest of the pass is not needed)."""


@dataclass
class GeometryReport:
    """What the model-based geometry check measured."""

    pattern_agreement: dict[str, float] = field(default_factory=dict)  #: view -> agreement of the cell pattern
    pattern_cells: dict[str, int] = field(default_factory=dict)  #: view -> cells compared
    box_agreement: float | None = None  #: mean over items of env_mask vs white positions (image-dependent positions)
    n_dependent: int = 0  #: image-dependent LM input positions (first image)
    n_vision_attention: int = 0  #: vision attention modules zeroed
    notes: list[str] = field(default_factory=list)


def _lm_prefix_and_layer0(adapter, loaded) -> tuple[str, str]:
    """``(language-model module path, decoder layer 0 path)`` from the adapter's attention sites."""
    site = adapter.attention_site(loaded)
    head = site.out_proj.split("{layer}")[0]  # "model.language_model.layers."
    return head.rsplit(".", 2)[0], head + str(site.layers[0])


def vision_attention_modules(model: torch.nn.Module, lm_prefix: str) -> list[str]:
    """Outermost modules whose class name ends in ``Attention`` and that are not in the language model."""
    out: list[str] = []
    for name, mod in model.named_modules():
        if not name or name == lm_prefix or name.startswith(lm_prefix + "."):
            continue
        if type(mod).__name__.endswith("Attention") and not any(name.startswith(o + ".") for o in out):
            out.append(name)
    return out


@contextlib.contextmanager
def vision_attention_zeroed(model: torch.nn.Module, names: list[str]):
    """Every module in ``names`` returns zeros (its first output); hooks removed on exit."""

    def zero(module, args, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]),) + tuple(out[1:])
        return torch.zeros_like(out)

    handles = [model.get_submodule(n).register_forward_hook(zero) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def lm_inputs(adapter, loaded, batch, layer0: str) -> torch.Tensor:
    """float ``[B, S, d]``: the hidden states entering decoder layer ``layer0`` for ``batch`` (the pass stops there)."""
    got: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        h = args[0] if args else kwargs.get("hidden_states")
        got.append(h.detach().float().cpu())
        raise _Stop

    handle = loaded.model.get_submodule(layer0).register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.forward(loaded, batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise AssertionError(f"model-based geometry: the model never reached {layer0} (attention_site points elsewhere?)")
    return got[0]


def _paint(size: tuple[int, int], rects: list[tuple[float, float, float, float]], file: str) -> str:
    from PIL import Image

    w, h = size
    px = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1 in rects:
        px[max(int(round(y0)), 0):max(int(round(y1)), 0), max(int(round(x0)), 0):max(int(round(x1)), 0)] = 255
    Image.fromarray(px).save(file)
    return file


def _cell_rect(g, k: int) -> tuple[float, float, float, float]:
    """Original-pixel rectangle shown by cell ``k`` of grid ``g`` (the inverse of ``to_view``)."""
    sx, sy, tx, ty = g.to_view
    r, c = divmod(k, g.cols)
    return ((c * g.cell - tx) / sx, (r * g.cell - ty) / sy, ((c + 1) * g.cell - tx) / sx, ((r + 1) * g.cell - ty) / sy)


def _whiteness(e: torch.Tensor, black: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
    d = white - black
    return ((e - black) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-30)


def _shift_hint(g, pattern: np.ndarray, ok: np.ndarray, white_at: dict[int, bool]) -> str:
    """Names the simple misplacement (a row or a column off) that agrees with the model, if one does."""
    for name, dr, dc in (("one row later", 1, 0), ("one row earlier", -1, 0), ("one column later", 0, 1),
                         ("one column earlier", 0, -1)):
        hits = n = 0
        for k in np.nonzero(ok)[0]:
            r, c = divmod(int(k), g.cols)
            r2, c2 = r + dr, c + dc
            if not (0 <= r2 < g.rows and 0 <= c2 < g.cols):
                continue
            p = g.positions[r2 * g.cols + c2]
            if p in white_at:
                n += 1
                hits += white_at[p] == bool(pattern[k])
        if n >= 8 and hits / n >= MIN_AGREEMENT:
            return f"; the model agrees ({hits / n:.2f}) with a layout whose every cell sits {name} than image_layout says"
    return ""


def check_model_geometry(adapter, loaded, items, *, max_images: int = 2, seed: int = 0,
                         min_agreement: float = MIN_AGREEMENT) -> GeometryReport:
    """The model-based geometry check (module docstring) on the images of ``items`` (``ProbeItem`` s with an
    ``ObjectItem`` in ``meta["object"]``); raises ``AssertionError`` naming the view and what differs."""
    report = GeometryReport()
    lm_prefix, layer0 = _lm_prefix_and_layer0(adapter, loaded)
    names = vision_attention_modules(loaded.model, lm_prefix)
    report.n_vision_attention = len(names)
    if not names:
        report.notes.append("model-based geometry: no vision attention module found; image features may mix cells")
    rng = np.random.default_rng(seed)
    by_image: dict[str, list] = {}
    for it in items:
        obj = it.meta["object"]
        by_image.setdefault(obj.image, []).append(it)
    box_scores: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vlground-geom-") as tmp, vision_attention_zeroed(loaded.model, names):
        for n_img, (image, its) in enumerate(list(by_image.items())[:max_images]):
            it0 = its[0]
            obj = it0.meta["object"]
            size = obj.image_size
            where = f"item {it0.item_id} ({size[0]}x{size[1]} image)"

            def run(pairs):
                painted = [dataclasses.replace(u, item_id=f"{u.item_id}#{i}", meta={**u.meta, "object": dataclasses.replace(
                    u.meta["object"], image=f, mismatch_image=f)}) for i, (u, f) in enumerate(pairs)]
                batch = adapter.batch(loaded, painted)
                return lm_inputs(adapter, loaded, batch, layer0), batch

            black_f = _paint(size, [], f"{tmp}/black-{n_img}.png")
            white_f = _paint(size, [(0, 0, size[0], size[1])], f"{tmp}/white-{n_img}.png")
            enc = adapter.call_hook("encode", loaded, black_f) if hasattr(adapter, "call_hook") else adapter.encode(loaded, black_f)
            layout = adapter.image_layout(loaded, enc, size)
            pattern_files, patterns = [], []
            for gi, g in enumerate(layout.grids):
                pat = rng.random(g.rows * g.cols) < 0.5
                rects = [_cell_rect(g, k) for k in np.nonzero(pat)[0]]
                pattern_files.append(_paint(size, rects, f"{tmp}/pattern-{n_img}-{gi}.png"))
                patterns.append(pat)
            box_files = []
            for j, it in enumerate(its):
                o = it.meta["object"]
                x, y, bw, bh = o.bbox
                box_files.append(_paint(size, [(x, y, x + bw, y + bh)], f"{tmp}/box-{n_img}-{j}.png"))
            E, batch = run([(it0, f) for f in [black_f, white_f] + pattern_files] + list(zip(its, box_files)))
            black, white = E[0], E[1]
            diff = (white - black).norm(dim=-1)
            scale = float(diff.max())
            if scale <= 1e-6 * max(1.0, float(black.norm(dim=-1).max())):
                raise AssertionError(
                    f"{where}: no position of the language model's input depends on the image (all-black and all-white "
                    "images give the same input): the image pathway is dead or zero (image projection, image_token_id)")
            dependent = torch.nonzero(diff > 1e-4 * scale)[:, 0].tolist()
            report.n_dependent = report.n_dependent or len(dependent)
            in_views = {p for g in layout.grids for p in g.positions}
            outside = [p for p in dependent if p not in in_views]
            if outside:
                raise AssertionError(
                    f"{where}: {len(outside)} of {len(dependent)} language-model input positions that depend on the image "
                    f"lie outside every view of image_layout (first at position {outside[0]}, which the layout calls "
                    f"{'a separator' if outside[0] in layout.separators else 'a prefix token' if outside[0] in layout.prefix else 'no image token'}): "
                    "a view is missing from the layout or misplaced (override image_layout)")
            white_at_all = (_whiteness(E, black, white) > 0.5)  # [B, S]
            dep = set(dependent)
            w_, h_ = size
            for gi, g in enumerate(layout.grids):
                pat = patterns[gi]
                ok = np.zeros(len(pat), bool)
                for k in range(len(pat)):
                    x0, y0, x1, y1 = _cell_rect(g, k)
                    inside = x0 >= -0.5 and y0 >= -0.5 and x1 <= w_ + 0.5 and y1 <= h_ + 0.5
                    ok[k] = inside and g.positions[k] in dep and min(x1 - x0, y1 - y0) >= 2.0
                row = white_at_all[2 + gi]
                white_at = {int(p): bool(row[p]) for p in dep}
                n = int(ok.sum())
                if n < 4:
                    report.notes.append(f"view {g.name!r}: {n} cells wholly inside the image; pattern not compared")
                    continue
                agree = float(np.mean([white_at[g.positions[k]] == bool(pat[k]) for k in np.nonzero(ok)[0]]))
                prev = report.pattern_agreement.get(g.name)
                report.pattern_agreement[g.name] = agree if prev is None else min(prev, agree)
                report.pattern_cells[g.name] = report.pattern_cells.get(g.name, 0) + n
                if agree < min_agreement:
                    bad = next(int(k) for k in np.nonzero(ok)[0] if white_at[g.positions[k]] != bool(pat[k]))
                    r, c = divmod(bad, g.cols)
                    raise AssertionError(
                        f"{where}: view {g.name!r}: with the vision attention zeroed, the model shows a random pattern of "
                        f"the layout's cells at other positions than image_layout says (agreement {agree:.2f} over {n} "
                        f"cells, a correct layout gives ~1; first: row {r}, col {c} at position {g.positions[bad]} is "
                        f"{'white' if pat[bad] else 'black'} but the model sees it "
                        f"{'white' if white_at[g.positions[bad]] else 'black'}){_shift_hint(g, pat, ok, white_at)}: "
                        "the layout is a row/column off, has its tiles in another order or a view misplaced (fix image_layout)")
            base = 2 + len(layout.grids)
            for j, it in enumerate(its):
                env = batch.env_mask[base + j]
                box_scores.append(float(np.mean([bool(white_at_all[base + j, p]) == bool(env[p]) for p in dependent])))
    report.box_agreement = float(np.mean(box_scores)) if box_scores else None
    if report.notes:
        for n in report.notes:
            log.info(n)
    return report


__all__ = ["GeometryReport", "check_model_geometry", "vision_attention_modules", "vision_attention_zeroed", "lm_inputs",
           "MIN_AGREEMENT"]
