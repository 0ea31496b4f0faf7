"""``saliency``: per layer, the saliency flow from the environment into the position just before
the target (``S_env``) against the mean of all other causal flows (``S_rest``), Wang et al. 2023.

Saliency is ``I = |dL/dA * A|`` summed over a layer's heads (``L`` = the target's loss at the
position before it). ``S_env`` = mean of ``I[predict_position, j]`` over environment positions
``j`` (``env_mask``); ``S_rest`` = mean over every other causal cell ``(i, j)``, ``j <= i``.
Rows are per (checkpoint, layer); layers are 1-based block numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.engine.adapter import Capability
from vlground.errors import InputError
from vlground.lazy import torch
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import layer_number, num, saliency_parts


@dataclass
class FlowRow:
    layer: int  #: 1-based layer (block) number (docs/probes.md, Numbering)
    s_env: float | None  #: mean saliency from the environment into the position before the target
    s_rest: float | None  #: mean saliency of every other causal flow
    env_flow: float | None  #: s_env / s_rest
    layer_index: int = -1  #: 0-based block index (hooks, TransformerLens, nnsight, HF)


class FlowProbe(Probe):
    name = "saliency"
    needs = frozenset({Capability.ATTENTION})
    doc = "saliency flow from the environment into the position before the target, per layer"

    @dataclass
    class Options:
        mech_items: int = 48  #: match items (env2lan) per checkpoint for the saliency probes, spread over frames and words
        probe_dtype: str = "float32"  #: dtype of the saliency pass: float32, or bfloat16 (autocast; faster on GPU, may change a few heads' labels)

        def check(self) -> None:
            from vlground.probes.common import PROBE_DTYPES

            if self.probe_dtype not in PROBE_DTYPES:
                raise InputError(f"--probe-dtype: {self.probe_dtype!r} is not one of {', '.join(PROBE_DTYPES)}")

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.saliency_summary import flow_from_summary

        site = ctx.adapter.attention_site(ctx.loaded)
        env, rest = [], []
        for part in saliency_parts(ctx, self.options.mech_items, self.options.probe_dtype):
            b = part.batch
            fl = flow_from_summary(part.summary, b.env_mask, valid=b.model_inputs.get("attention_mask"))
            env.append(fl.env)
            rest.append(fl.rest)
        if not env:
            return ProbeResult(notes=[f"saliency: skipped for {ctx.key} (no match items)"])
        s_env, s_rest = torch.cat(env).mean(0), torch.cat(rest).mean(0)
        rows = [
            FlowRow(layer_number(layer), num(e), num(r), num(e / r) if r > 0 else None, layer_index=int(layer))
            for layer, e, r in zip(site.layers, s_env.tolist(), s_rest.tolist())
        ]
        return ProbeResult(tables={"flow": rows})
