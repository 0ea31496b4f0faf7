"""``boxheads``: per head, the share of its image-to-word saliency that comes from inside the
object's box, and the box aggregate heads (the paper's realistic-setting criterion).

For each match item, the saliency ``dL/dA * A`` of every head from each image token into the
position just before the object's name (the loss is the name's first sub-token). A head's
*inside share* is the share of its image-to-word saliency mass from image tokens inside the box
(``env_mask``, over ``env_span``). A head is aggregate at level ``t`` for an item when its inside
share is ``>= t`` (``--box-thresholds``, default 70% and 90%); the ``heads`` table lists it as
``aggregate@t`` for the highest level it meets on at least half of the items.

Criteria that compare across VLMs (576 or 2,000 image tokens):

* ``inside_vs_chance``: the inside share divided by the share of the item's image tokens that are
  inside the box (``|env_mask| / |env_span|``), mean over items: 1 is what a head spreading its
  saliency evenly over the image tokens gets, whatever their number.
* ``artefact_share``: the share of the head's image saliency on *artefact tokens*, the image tokens
  whose input feature (the decoder's input embedding at that position) has an outlying norm
  (above Q3 + 3 IQR of that item's image tokens that show the image, separators and prefix
  tokens left out; Darcet et al.'s high-norm register-like tokens).
* ``view_share``: for images of several views (LLaVA-NeXT's base view and tiles), the share of the
  head's image saliency on each view.

Saliency runs through the adapter's one forward path (:meth:`Adapter.saliency`). Only the saliency
row of the predicted position is kept (``[items, layers, heads, seq]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vlground.engine.adapter import Capability
from vlground.errors import InputError
from vlground.lazy import torch
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched, head_number, layer_number, mech_items


@dataclass
class BoxDefinition:
    """Options the box probes share."""

    mech_items: int = 48  #: match items (env2lan) per checkpoint for the saliency probes, spread over frames and words
    box_thresholds: tuple[float, ...] = (0.7, 0.9)  #: aggregate head (images): inside-box share thresholds

    def check(self) -> None:
        if not self.box_thresholds or not all(0 < t <= 1 for t in self.box_thresholds):
            raise InputError("--box-thresholds: each threshold must be in (0, 1]")

    @property
    def levels(self) -> list[float]:
        return sorted({float(t) for t in self.box_thresholds})


class NoImages(Exception):
    """The items have no image tokens to read box shares from."""


def box_saliency(ctx: ProbeContext, n_items: int) -> list[tuple]:
    """``[(batch, rows [B, L_att, H, S], norms [B, S])]``: saliency into each item's predicted position
    through the adapter's forward path, and the norm of each position's decoder input; memoised."""
    key = f"box_saliency:{n_items}"
    if key in ctx.memo:
        return ctx.memo[key]
    adapter, loaded = ctx.adapter, ctx.loaded
    out = []
    for chunk in batched(mech_items(ctx.items, n_items), adapter.options.batch_size):
        batch = adapter.batch(loaded, chunk)
        rows = adapter.saliency(loaded, batch)
        with torch.no_grad():
            hidden = adapter.forward(loaded, batch, output_hidden_states=True).hidden_states[0]
        out.append((batch, rows, hidden.float().norm(dim=-1).cpu()))
    ctx.memo[key] = out
    return out


def artefact_tokens(norms: torch.Tensor, span: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """bool ``[S]``: image tokens (``span``) whose feature norm is above ``Q3 + k * IQR`` of the item's image tokens."""
    vals = norms[span]
    if vals.numel() < 4:
        return torch.zeros_like(span)
    q1, q3 = torch.quantile(vals, 0.25), torch.quantile(vals, 0.75)
    return span & (norms > q3 + k * (q3 - q1))


def head_inside_shares(rows: torch.Tensor, env_mask: torch.Tensor, env_span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rows ``[B, L, H, S]``, env_mask / env_span bool ``[B, S]`` -> ``(share [B, L, H], mass [B, L, H])``;
    ``share = sum_inside |I| / sum_image |I|``."""
    from vlground.mechanism.patterns import inside_share

    shares, masses = [], []
    for b in range(rows.shape[0]):
        span = env_span[b].nonzero()[:, 0]
        r = rows[b][..., span]  # [L, H, n_image]
        shares.append(inside_share(r, env_mask[b][span]))
        masses.append(r.abs().sum(-1))
    return torch.stack(shares), torch.stack(masses)


def box_aggregate_heads(shares: torch.Tensor, levels: list[float]) -> dict[float, torch.Tensor]:
    """``{level: shares >= level}`` (bool, the shape of ``shares``): the paper's aggregate criterion."""
    from vlground.mechanism.patterns import BoxThresholds, box_aggregate

    return box_aggregate(shares, BoxThresholds(tuple(levels)))


def shares(ctx: ProbeContext, n_items: int):
    """``(parts, share [N, L, H], mass [N, L, H])`` over the mechanistic items; raises :class:`NoImages`."""
    parts = box_saliency(ctx, n_items)
    if not parts:
        raise NoImages("no match items")
    if any(b.env_span is None for b, *_ in parts):
        raise NoImages(f"adapter {ctx.adapter.name} marks no image tokens (env_span)")
    res = [head_inside_shares(r, b.env_mask, b.env_span) for b, r, _ in parts]
    return parts, torch.cat([s for s, _ in res]), torch.cat([m for _, m in res])


def comparable_measures(parts) -> dict[str, torch.Tensor]:
    """Per item and head (``[N, L, H]``): ``inside_vs_chance``, ``artefact_share`` and ``view:<name>``
    shares; per item (``[N]``): ``chance`` (inside image tokens / image tokens) and ``n_artefacts``."""
    out: dict[str, list] = {"inside_vs_chance": [], "artefact_share": [], "chance": [], "n_artefacts": []}
    for batch, rows, norms in parts:
        for b in range(rows.shape[0]):
            span, inside = batch.env_span[b], batch.env_mask[b]
            mag = rows[b].abs()  # [L, H, S]
            mass = mag[..., span].sum(-1).clamp_min(1e-30)
            chance = inside.sum() / span.sum()
            out["chance"].append(chance.float())
            out["inside_vs_chance"].append(mag[..., inside].sum(-1) / mass / chance)
            shown = span.clone()  # artefacts are sought among the tokens that show the image
            for name in ("separator", "prefix"):
                if name in batch.env_views:
                    shown &= ~batch.env_views[name][b]
            art = artefact_tokens(norms[b], shown)
            out["n_artefacts"].append(art.sum().float())
            out["artefact_share"].append(mag[..., art].sum(-1) / mass)
            for name, m in batch.env_views.items():
                out.setdefault(f"view:{name}", []).append(mag[..., m[b]].sum(-1) / mass)
    return {k: torch.stack(v) for k, v in out.items()}


@dataclass
class BoxHeadRow:
    layer: int  #: 1-based layer (block) number (docs/probes.md, Numbering)
    head: int  #: 1-based head number (``L{layer}.H{head}``)
    kind: str  #: aggregate@t for the highest level met on >= half the items, else none
    inside_share: float  #: mean share of its image-to-word saliency from inside the box
    saliency_share: float  #: its share of all heads' image-to-word saliency, mean over items
    inside_vs_chance: float  #: inside share / share of the image tokens inside the box, mean over items (1 = chance)
    artefact_share: float  #: share of its image saliency on artefact (outlying-norm) image tokens, mean over items
    aggregate_frac: dict = field(default_factory=dict)  #: level -> share of items on which it is aggregate
    view_share: dict = field(default_factory=dict)  #: view (base, tiles ...) -> share of its image saliency, mean over items
    layer_index: int = -1  #: 0-based block index (hooks, TransformerLens, nnsight, HF)
    head_index: int = -1  #: 0-based head index


class BoxHeadsProbe(Probe):
    name = "boxheads"
    needs = frozenset({Capability.ATTENTION})
    doc = "per head: share of image-to-word saliency from inside the object's box; box aggregate heads"
    Options = BoxDefinition

    def run(self, ctx: ProbeContext) -> ProbeResult:
        site = ctx.adapter.attention_site(ctx.loaded)
        levels = self.options.levels
        try:
            parts, share, mass = shares(ctx, self.options.mech_items)
        except NoImages as exc:
            return ProbeResult(notes=[f"boxheads: skipped for {ctx.key} ({exc})"])
        n = share.shape[0]
        agg = box_aggregate_heads(share, levels)
        frac = {t: m.float().mean(0) for t, m in agg.items()}  # [L, H]
        mean_share = share.mean(0)
        mass_share = (mass / mass.sum((-1, -2), keepdim=True).clamp_min(1e-30)).mean(0)
        cmp = comparable_measures(parts)
        vs_chance, artefact = cmp["inside_vs_chance"].mean(0), cmp["artefact_share"].mean(0)
        views = {k.split(":", 1)[1]: v.mean(0) for k, v in cmp.items() if k.startswith("view:")}
        rows = []
        for k, layer in enumerate(site.layers):
            for h in range(site.n_heads):
                met = [t for t in levels if frac[t][k, h] >= 0.5]
                rows.append(BoxHeadRow(layer_number(layer), head_number(h), f"aggregate@{max(met):g}" if met else "none",
                                       float(mean_share[k, h]), float(mass_share[k, h]), float(vs_chance[k, h]),
                                       float(artefact[k, h]), {f"{t:g}": float(frac[t][k, h]) for t in levels},
                                       {v: float(m[k, h]) for v, m in views.items()}, layer_index=int(layer), head_index=h))
        record = {"box_items": n, "box_chance_share": float(cmp["chance"].mean()),
                  "box_artefact_tokens": float(cmp["n_artefacts"].mean())}
        record.update({f"box_view_share@{v}": float(m.mean()) for v, m in views.items()})
        record.update({f"box_aggregate_heads@{t:g}": sum(r.aggregate_frac[f"{t:g}"] >= 0.5 for r in rows) for t in levels})
        words = sorted({it.word for b, *_ in parts for it in b.items})
        notes = [f"boxheads: {n} match item(s) ({len(words)} word(s)); saliency from every image token into the position "
                 "before the object's name (first sub-token's loss); a head is aggregate@t on an item when >= t of its "
                 "image-to-word saliency comes from image tokens inside the box, and listed as such when it is on >= half the items; "
                 f"inside_vs_chance divides the inside share by the share of image tokens inside the box "
                 f"(mean {float(cmp['chance'].mean()):.1%} here); artefact_share is the share on image tokens of outlying "
                 f"feature norm (mean {float(cmp['n_artefacts'].mean()):.1f} per item)"]
        if views:
            notes.append("boxheads: image saliency by view: " + ", ".join(
                f"{v} {float(m.mean()):.1%}" for v, m in views.items()) + " (mean over heads and items)")
        from vlground.probes.overlays import overlay_example  # the report's image example

        fields, example = overlay_example(ctx, parts, share, site)
        record.update(fields)
        return ProbeResult(record=record, tables={"heads": rows}, arrays={"inside_share": share.numpy(), **example}, notes=notes)
