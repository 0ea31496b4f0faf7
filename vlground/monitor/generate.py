"""Greedy decoding through the adapter, with the monitor's attention capture in the same forward passes.

:func:`decode` runs one prompt (batch of one): a prefill pass with every model input the adapter
encoded (image pixels or features), then one pass per new token with ``input_ids`` of that token,
the extended ``attention_mask`` and the key/value cache the model returned (``cache``, or
``past_key_values`` in older ``transformers``). The prefill's inputs come from ``adapter.model_inputs`` (the
adapter's one forward path: dtype casts, M-RoPE ``position_ids`` ...); each later step continues
``position_ids`` after the prompt and gives other per-token inputs (``mm_token_type_ids``) a text value.

With a :class:`~vlground.monitor.score.AttentionRecorder` active (``with capture_attention(...)``)
each step keeps the attention of every head from the position that predicted the token; the
grounding score of the chosen heads is computed from it at once, so :class:`Mitigation` can act on
the token being chosen. Plain generation (no recorder) runs the identical loop, which is what the
overhead benchmark compares against.

**Mitigation** (``--mitigate``, off by default): when the step's grounding score is below
``threshold``, the logits of the object-word tokens (the first sub-token of every word naming a
category; "yes" for POPE) are lowered by ``penalty`` nats before the greedy choice, and decoding
continues. The score of a step does not depend on which token is then chosen (it is read at the
predicting position), so a low score down-weights every object word at that step alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlground.engine.adapter import Adapter, LoadedModel, ProbeBatch
from vlground.mechanism.errors import MechanismError
from vlground.monitor.score import AttentionRecorder, grounding


@dataclass
class Mitigation:
    threshold: float  #: grounding score below which object words are down-weighted
    penalty: float  #: nats subtracted from their logits
    token_ids: torch.Tensor  #: long [n]: the object-word tokens


@dataclass
class Step:
    """One generated token."""

    token: int
    logprob: float  #: the model's own log p(token) (before any mitigation), nats
    entropy: float  #: predictive entropy of the model's distribution at this step, nats
    rows: torch.Tensor | None = None  #: ``[captured layers, heads, keys]`` attention from the predicting position
    score: float | None = None  #: grounding score of the chosen heads
    penalised: bool = False  #: mitigation lowered the object words at this step
    logprobs: torch.Tensor | None = None  #: ``[vocab]`` log-probabilities (first step only)


def _batch(loaded: LoadedModel, inputs: dict[str, torch.Tensor]) -> ProbeBatch:
    """A one-row :class:`ProbeBatch` with no target around raw model inputs."""
    n = next(iter(inputs.values())).shape[0]
    empty = torch.zeros((n, 0), dtype=torch.long)
    return ProbeBatch(items=[], model_inputs=dict(inputs), target_ids=empty, target_positions=empty,
                      env_mask=torch.zeros((n, 0), dtype=torch.bool))


def forward(adapter: Adapter, loaded: LoadedModel, inputs: dict[str, torch.Tensor], **kwargs):
    """``adapter.forward`` on raw model inputs."""
    return adapter.forward(loaded, _batch(loaded, inputs), **kwargs)


def _step_inputs(prefill: dict[str, torch.Tensor], token: int, t: int, mask: torch.Tensor,
                 fills: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """Inputs of decoding step ``t`` (0 = the first token after the prompt) from the prefill's model inputs.

    The new token's id and the extended attention mask; ``position_ids`` continue after the prompt's last
    position (also M-RoPE's ``[3, B, S]``); other per-token integer inputs get the adapter's declared value
    for a generated token (``fills``: its ``token_inputs``, e.g. PaliGemma's ``token_type_ids`` 1 = answer),
    else 0 (a text token, e.g. ``mm_token_type_ids``); image inputs are not passed again (they are in the cache).
    """
    fills = fills or {}
    S = prefill["input_ids"].shape[-1]
    dev = prefill["input_ids"].device
    out = {"input_ids": torch.tensor([[token]], dtype=torch.long, device=dev), "attention_mask": mask.to(dev)}
    for k, v in prefill.items():
        if k in out or not isinstance(v, torch.Tensor) or v.dim() < 2 or v.shape[-1] != S:
            continue
        if k == "position_ids":
            out[k] = v[..., -1:] + 1 + t
        elif not v.is_floating_point():
            out[k] = torch.full_like(v[..., -1:], int(fills.get(k, 0)))
    return out


def _cache(out) -> tuple[str, object]:
    for name in ("cache", "past_key_values"):
        value = getattr(out, name, None)
        if value is not None:
            return name, value
    raise MechanismError(f"{type(out).__name__}: the model returned no key/value cache (use_cache=True)")


@torch.no_grad()
def decode(adapter: Adapter, loaded: LoadedModel, inputs: dict[str, torch.Tensor], *, max_new_tokens: int,
           stop_ids: set[int] = frozenset(), recorder: AttentionRecorder | None = None, image: torch.Tensor | None = None,
           heads: torch.Tensor | None = None, mitigation: Mitigation | None = None, k: int = 4) -> list[Step]:
    """Greedy decoding of one prompt.

    inputs: model inputs of batch 1 (``input_ids [1, S]``, ``attention_mask [1, S]``, image inputs);
    recorder: active attention capture (None: plain generation; it may capture only the layers of the
    chosen heads, :func:`~vlground.monitor.score.monitored_layers`); image: bool ``[S]`` image-token
    positions and heads: bool ``[layers, heads]`` over all attention layers (needed for ``score`` and
    ``mitigation``; the score reads only these heads).
    """
    if mitigation is not None and (recorder is None or heads is None):
        raise MechanismError("mitigation needs the attention capture and the chosen heads")
    steps: list[Step] = []
    chosen = recorder.select(heads) if recorder is not None and heads is not None else None  # heads of the captured layers
    mask = inputs["attention_mask"]
    prefill = adapter.model_inputs(loaded, _batch(loaded, inputs))  # the adapter's one forward path
    step_inputs = prefill
    cache_kw: dict = {}
    for t in range(max_new_tokens):
        out = loaded.model(**step_inputs, use_cache=True, **cache_kw)
        logits = out.logits[0, -1].float()
        logp = torch.log_softmax(logits, -1)
        entropy = float(-(logp.exp() * logp).sum())
        step = Step(token=-1, logprob=0.0, entropy=entropy, logprobs=logp.cpu() if t == 0 else None)
        if recorder is not None:
            step.rows = recorder.pop()[0]
            if chosen is not None and image is not None:
                step.score = float(grounding(step.rows[None], image, chosen, k).score[0])
        choice = logits
        if mitigation is not None and step.score is not None and step.score < mitigation.threshold:
            choice = logits.clone()
            choice[mitigation.token_ids.to(choice.device)] -= mitigation.penalty
            step.penalised = True
        step.token = int(choice.argmax())
        step.logprob = float(logp[step.token])
        steps.append(step)
        if step.token in stop_ids or t == max_new_tokens - 1:
            break
        name, cache = _cache(out)
        mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
        step_inputs = _step_inputs(prefill, step.token, t, mask, dict(getattr(adapter, "token_inputs", {}) or {}))
        cache_kw = {name: cache}
    return steps
