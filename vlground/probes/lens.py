"""``lens``: a tuned lens per layer (Belrose et al. 2023), fit once per checkpoint on held-out
text and saved beside it (``<checkpoint>/tuned-lens/``, reused while its unembedding hash
matches); then the target's surprisal per layer in the match condition (env2lan) and the
held-out KL between each layer's lens and the model's own output distribution.

Layer ``k`` (1-based) is the residual stream after block ``k``, the block the flow probe calls
layer ``k``; layer 0 is the embedding output. At the last layer the lens is the model's own
unembedding (KL 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vlground.engine.adapter import Capability
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched


@dataclass
class LensRow:
    layer: int  #: 0 = embeddings, k = after block k (1-based)
    surprisal: float  #: mean target surprisal (nats) read through the lens, match items (env2lan)
    kl: float  #: held-out KL(model || lens) in nats per token


class LensProbe(Probe):
    name = "lens"
    needs = frozenset({Capability.HIDDEN_STATES})
    doc = "tuned lens: target surprisal per layer, held-out KL per layer"

    @dataclass
    class Options:
        lens_steps: int = 150  #: optimisation steps of each tuned lens

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.errors import MechanismError
        from vlground.mechanism.lens import LensBatch, LensTrainConfig, TunedLens, fit_lens, lens_kl, lens_surprisal

        adapter, loaded = ctx.adapter, ctx.loaded
        unembedding = adapter.unembed(loaded)
        inputs = adapter.lens_batches(loaded)
        if unembedding is None or not inputs:
            return ProbeResult(notes=[f"lens: skipped for {ctx.key} (no unembedding or no held-out text)"])

        def lens_batch(model_inputs: dict) -> LensBatch:
            model_inputs = {k: v.to(loaded.device) for k, v in model_inputs.items()}
            with torch.no_grad():
                out = loaded.model(**model_inputs, output_hidden_states=True)
            return LensBatch([h.detach() for h in out.hidden_states], out.logits.detach(), model_inputs.get("attention_mask"))

        batches = [lens_batch(b) for b in inputs]
        train, held = (batches[:-1], batches[-1:]) if len(batches) > 1 else (batches, batches)
        n_layers, d_model = len(batches[0].hidden_states) - 1, batches[0].hidden_states[0].shape[-1]
        lens_dir = Path(loaded.checkpoint.path) / "tuned-lens"
        lens, notes = None, []
        if lens_dir.is_dir():
            try:
                lens = TunedLens.load(lens_dir, unembedding)
            except (MechanismError, OSError, ValueError) as exc:
                notes.append(f"lens: {lens_dir} not reused ({exc}); retrained")
        if lens is None:
            lens = TunedLens.for_unembedding(n_layers, d_model, unembedding)
            fit_lens(lens, unembedding, train, LensTrainConfig(steps=self.options.lens_steps))
            try:
                lens.save(lens_dir)
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
        rows = [LensRow(layer, float(sp[layer]), float(kl[layer]) if layer < n_layers else 0.0) for layer in range(n_layers + 1)]
        return ProbeResult(tables={"lens": rows}, notes=notes)
