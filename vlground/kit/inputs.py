"""Kit checks of an image adapter's inputs against the model and its processor (not against the adapter).

* :func:`check_image_tokens`: the image-token id the adapter uses is the model config's, the layout
  covers exactly the image tokens of ``input_ids`` (count and positions), and every image token
  belongs to one view (grids, prefix and separators do not overlap);
* :func:`check_plain_processor`: the scoring pass gives the log-probabilities of the model run on
  the plain processor output (every tensor it returns, ``labels`` left out): an input dropped from
  both the scoring and the saliency pass (``token_type_ids``) changes them;
* :func:`check_no_leak`: changing the target's later sub-tokens (teacher-forced into the input)
  does not move the logits at the predicted position (a prefix-LM's token types that put them in
  the bidirectional prefix do);
* :func:`check_image_matters`: the image changes some score (a dead or all-zero image pathway does not).

Each raises ``AssertionError`` naming the item, the cause and the hook to override.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging

import torch

log = logging.getLogger(__name__)


def config_image_token_id(model) -> int | None:
    """The image token id the model itself replaces by image features (``config.image_token_id`` /
    ``image_token_index``), or None when the config names none."""
    cfg = model.config
    for name in ("image_token_id", "image_token_index"):
        v = getattr(cfg, name, None)
        if v is not None:
            return int(v)
    return None


def _tok(loaded, i: int) -> str:
    try:
        return repr(loaded.tokenizer.convert_ids_to_tokens(int(i)))
    except Exception:  # noqa: BLE001 - only for the message
        return "?"


def check_image_tokens(adapter, loaded, item) -> None:
    """Image-token id, count and views of one item's image (module docstring)."""
    obj = item.meta["object"]
    enc = adapter.call_hook("encode", loaded, obj.image)
    ids = enc["input_ids"][0]
    used = int(loaded.extra["image_token_id"])
    model_id = config_image_token_id(loaded.model)
    where = f"item {item.item_id}"
    if model_id is not None and model_id != used:
        raise AssertionError(
            f"{where}: the adapter's image_token_id() gives {used} ({_tok(loaded, used)}) but the model replaces "
            f"token {model_id} ({_tok(loaded, model_id)}) by image features (config.image_token_id): override image_token_id")
    tid = model_id if model_id is not None else used
    in_ids = set(torch.nonzero(ids == tid)[:, 0].tolist())
    layout = adapter.call_hook("image_layout", loaded, enc, obj.image_size)
    parts = [(g.name, list(g.positions)) for g in layout.grids] + [("prefix", list(layout.prefix)),
                                                                   ("separator", list(layout.separators))]
    owner: dict[int, str] = {}
    for name, pos in parts:
        for p in pos:
            if p in owner:
                raise AssertionError(f"{where}: image_layout puts position {p} in two views ({owner[p]!r} and {name!r})")
            owner[p] = name
    laid = set(owner)
    if laid != in_ids:
        missing, extra = sorted(in_ids - laid), sorted(laid - in_ids)
        raise AssertionError(
            f"{where}: input_ids hold {len(in_ids)} image tokens (id {tid}) but image_layout has {len(laid)}"
            + (f"; {len(missing)} image tokens in no view (first at {missing[0]})" if missing else "")
            + (f"; {len(extra)} layout positions are not image tokens (first at {extra[0]})" if extra else "")
            + " (override image_layout, or image_token_id if the adapter counts another token)")


def _model_kwargs(model, enc: dict) -> tuple[dict, list[str]]:
    """The processor outputs ``model.forward`` accepts (by name; all when it takes ``**kwargs``), and the others."""
    params = inspect.signature(model.forward).parameters
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    from vlground.adapters.hf_vlm import NOT_MODEL_INPUTS

    keep, left = {}, []
    for k, v in enc.items():
        if not isinstance(v, torch.Tensor) or k in NOT_MODEL_INPUTS or not (k in params or open_kw):
            left.append(k)
        else:
            keep[k] = v
    return keep, left


def check_plain_processor(adapter, loaded, item, atol: float = 1e-4) -> dict:
    """The scoring pass on ``item`` alone vs ``model(**processor output)`` at the predicted position; returns
    ``{"max_diff": ..., "left_out": [...]}``."""
    from PIL import Image

    obj = item.meta["object"]
    file = obj.image if item.condition == "match" else obj.mismatch_image
    with Image.open(file) as im:
        image = im.convert("RGB")
    raw = dict(adapter.call_hook("process", loaded, image, adapter._prompt(loaded)))
    plain, left = _model_kwargs(loaded.model, raw)
    dev = loaded.device
    plain = {k: (v.to(dev, loaded.model.dtype) if v.is_floating_point() else v.to(dev)) for k, v in plain.items()}
    with torch.no_grad():
        ref = loaded.model(**plain).logits[0, -1].float()
        batch = adapter.batch(loaded, [item])
        out = adapter.forward(loaded, batch).logits
    pos = int(batch.predict_positions[0])
    got = out[0, pos if out.shape[1] > pos else -1].float()
    diff = float((torch.log_softmax(got, -1) - torch.log_softmax(ref.to(got.device), -1)).abs().max())
    tol = atol if loaded.model.dtype == torch.float32 else 5e-2
    scoring = set(adapter.model_inputs(loaded, batch))
    missing = sorted(set(plain) - scoring - {"input_ids"})
    if diff > tol:
        hint = (f"; the processor gives {missing} that the scoring pass does not (declare them in token_inputs or "
                "keep them in batch/model_inputs)" if missing else
                "; every processor input reaches the model, so the batch changes one (token_inputs fill values, padding)")
        raise AssertionError(
            f"item {item.item_id}: the scoring pass gives other log-probabilities at the predicted position than the "
            f"model run on the plain processor output (max |diff| {diff:.2e}){hint}")
    return {"max_diff": diff, "left_out": left}


def check_no_leak(adapter, loaded, item, atol: float = 1e-5) -> bool:
    """Change the target's later sub-tokens and compare the logits at the predicted position. An item whose
    word has one sub-token gets a second one (an ordinary token id) for the check. False when not applicable."""
    obj = item.meta.get("object")
    if obj is not None and len(obj.word_ids) < 2:
        extra = next(i for i in range(5, 10_000) if i not in obj.word_ids and i != loaded.extra.get("image_token_id"))
        item = dataclasses.replace(item, meta={**item.meta, "object": dataclasses.replace(obj, word_ids=(*obj.word_ids, extra))})
    batch = adapter.batch(loaded, [item])
    T = int((batch.target_ids[0] >= 0).sum())
    if T < 2:
        return False
    pos = int(batch.predict_positions[0])
    later = batch.target_positions[0, 1:T]
    ids = batch.model_inputs["input_ids"]
    changed = ids.clone()
    image_id = int(loaded.extra.get("image_token_id", -1))
    vocab = loaded.model.get_input_embeddings().weight.shape[0]
    for p in later.tolist():
        new = (int(ids[0, p]) + 7) % vocab
        while new == image_id or new == int(ids[0, p]):
            new = (new + 1) % vocab
        changed[0, p] = new
    other = dataclasses.replace(batch, model_inputs={**batch.model_inputs, "input_ids": changed})
    with torch.no_grad():
        a = adapter.forward(loaded, batch).logits[0, pos].float()
        b = adapter.forward(loaded, other).logits[0, pos].float()
    diff = float((a - b).abs().max())
    tol = atol * max(1.0, float(a.abs().max())) if loaded.model.dtype == torch.float32 else 5e-2
    if diff > tol:
        extras = [k for k, v in batch.model_inputs.items() if k not in ("input_ids", "attention_mask")
                  and v.dim() == 2 and v.shape == ids.shape]
        raise AssertionError(
            f"item {item.item_id}: the logits at the predicted position {pos} change (max |diff| {diff:.2e}) when the "
            f"target's later sub-tokens at {later.tolist()} change: the prediction sees the answer (prefix-LM leak"
            + (f"; check the fill value of {extras} for the target's sub-tokens in token_inputs" if extras else "") + ")")
    return True


def check_image_matters(items, logprobs: torch.Tensor, atol: float = 1e-6) -> None:
    """Match and mismatch items of some pair must score differently (the image reaches the prediction)."""
    by_pair: dict[str, dict[str, float]] = {}
    for it, lp in zip(items, logprobs.tolist()):
        by_pair.setdefault(it.pair_id, {})[it.condition] = lp
    gaps = [abs(d["match"] - d["mismatch"]) for d in by_pair.values() if len(d) == 2]
    if gaps and max(gaps) <= atol:
        raise AssertionError(
            f"the image changes no score: match and mismatch items of {len(gaps)} pairs score the same to {atol:g} nats "
            "(a dead or all-zero image pathway: the image projection, the image inputs dropped, image_token_id)")


__all__ = ["check_image_tokens", "check_plain_processor", "check_no_leak", "check_image_matters", "config_image_token_id"]
