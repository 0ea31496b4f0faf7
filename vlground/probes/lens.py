"""``lens``: a tuned lens per layer (Belrose et al. 2023), fit once per checkpoint on held-out
text and saved beside it (``<checkpoint>/tuned-lens/``, reused while its unembedding hash
matches); then the target's surprisal per layer in the match condition (env2lan) and the
held-out KL between each layer's lens and the model's own output distribution.

Layer ``k`` (1-based) is the residual stream after block ``k``, the block the flow probe calls
layer ``k``; layer 0 is the embedding output. At the last layer the lens is the model's own
unembedding (KL 0).

Token budget: the adapter supplies ``--lens-tokens`` held-out tokens (default 250k, or its whole
held-out split when smaller); the last tenth of those batches (at least one) is kept out of the
fit to measure the per-layer KL.  Activations are computed batch by batch as the fit needs them
(:class:`vlground.mechanism.lens.LazyLensBatches`), and every fit batch is used at least once.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vlground.engine.adapter import Capability
from vlground.mechanism.sites import hidden_state_layer
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched


#: beside a saved lens: the options and token count it was fit with (reuse only when they match)
FIT_INFO = "vlground-fit.json"


@dataclass
class LensRow:
    layer: int  #: 0 = embeddings, k = after block k (1-based)
    surprisal: float  #: mean target surprisal (nats) read through the lens, match items (env2lan)
    kl: float  #: held-out KL(model || lens) in nats per token
    fit_tokens: int  #: held-out tokens the lens was fit on (also when a saved lens was reused)
    held_out_tokens: int  #: tokens the KL was measured on


class LensProbe(Probe):
    name = "lens"
    needs = frozenset({Capability.HIDDEN_STATES})
    doc = "tuned lens: target surprisal per layer, held-out KL per layer"

    @dataclass
    class Options:
        lens_steps: int = 150  #: minimum optimisation steps of each tuned lens (one batch per step; every batch is used at least once)
        lens_tokens: int = 250_000  #: held-out tokens to fit and evaluate each lens on (the adapter's whole held-out split if it has fewer)

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.errors import MechanismError
        from vlground.mechanism.lens import LazyLensBatches, LensTrainConfig, TunedLens, fit_lens, lens_kl, lens_surprisal, split_held_out

        adapter, loaded = ctx.adapter, ctx.loaded
        unembedding = adapter.unembed(loaded)
        if "n_tokens" in inspect.signature(adapter.lens_batches).parameters:
            inputs = adapter.lens_batches(loaded, n_tokens=self.options.lens_tokens)
        else:
            inputs = adapter.lens_batches(loaded)
        if unembedding is None or not inputs:
            return ProbeResult(notes=[f"lens: skipped for {ctx.key} (no unembedding or no held-out text)"])

        batches = LazyLensBatches(loaded.model, inputs, loaded.device)
        train, held = split_held_out(batches)
        first = batches[0]
        n_layers, d_model = len(first.hidden_states) - 1, first.hidden_states[0].shape[-1]
        fit_tokens = train.n_tokens() if train is not held else held.n_tokens()
        # a saved lens is reused only if it was fit the same way on the same number of tokens
        fit_info = {"lens_tokens": self.options.lens_tokens, "lens_steps": self.options.lens_steps, "fit_tokens": fit_tokens}
        lens_dir = Path(loaded.checkpoint.path) / "tuned-lens"
        lens, notes = None, []
        if lens_dir.is_dir():
            try:
                saved = json.loads((lens_dir / FIT_INFO).read_text()) if (lens_dir / FIT_INFO).is_file() else None
                if saved != fit_info:
                    raise MechanismError(f"fit with {saved or 'unrecorded options'}, not {fit_info}")
                lens = TunedLens.load(lens_dir, unembedding)
            except (MechanismError, OSError, ValueError) as exc:
                notes.append(f"lens: {lens_dir} not reused ({exc}); retrained")
        if lens is None:
            lens = TunedLens.for_unembedding(n_layers, d_model, unembedding)
            fit_lens(lens, unembedding, train, LensTrainConfig(steps=self.options.lens_steps))
            try:
                lens.save(lens_dir)
                (lens_dir / FIT_INFO).write_text(json.dumps(fit_info))
            except OSError as exc:
                notes.append(f"lens: cannot save beside the checkpoint ({exc})")
        kl = lens_kl(lens, unembedding, held)

        chosen = [it for it in ctx.items if it.condition == "match" and it.direction == "env2lan"]
        sps = []
        for chunk in batched(chosen, adapter.options.batch_size):
            b = adapter.batch(loaded, chunk).to(loaded.device)
            with torch.no_grad():
                out = adapter.forward(loaded, b, output_hidden_states=True)
            sps.append(lens_surprisal(lens, unembedding, out.hidden_states, b.predict_positions, b.target_ids[:, 0]))
        if not sps:
            return ProbeResult(notes=notes + [f"lens: skipped for {ctx.key} (no match items)"])
        sp = torch.cat(sps).mean(0)
        held_tokens = held.n_tokens()
        # row k reads hidden_states[k]: the output of 1-based layer k (0 = embeddings), see mechanism.sites.hidden_state_layer
        rows = [LensRow(hidden_state_layer(i), float(sp[i]), float(kl[i]) if i < n_layers else 0.0, fit_tokens, held_tokens)
                for i in range(n_layers + 1)]
        if 0 < fit_tokens < self.options.lens_tokens:
            notes.append(f"lens: {ctx.key}: fit on {fit_tokens} held-out tokens (fewer than --lens-tokens {self.options.lens_tokens}: "
                         "the whole held-out split)")
        return ProbeResult(tables={"lens": rows}, notes=notes)
