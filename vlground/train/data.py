"""Which chunks a run trains on, in which order, and how they become a batch.

* :func:`split_chunks`: a held-out validation set drawn with ``split_seed`` (the same for every
  run seed), recorded in ``RUN/split.json``.
* :func:`chunk_order`: the presentation order, ``RUN/order.npy`` (int64 chunk indices): one
  permutation of the training chunks per epoch, drawn from the run seed. Step ``s`` (1-based)
  with global batch size ``B`` trains on ``order[(s-1)*B : s*B]``; with several processes rank
  ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of that range.
* :func:`make_batch`: the one place a batch is made. For a corpus with images
  (:class:`vlground.vision.features.CorpusImages`) it adds ``image_mask`` (bool ``[B, S]``, the
  ``<image>`` positions) and ``image_features`` (float32 ``[n_image_positions, d]``, row-major
  over the mask), read from the memory-mapped features cache; :func:`embed_inputs` turns such a
  batch into ``inputs_embeds`` (token embeddings at text positions, the features themselves at
  image positions: no projector, so the model width is the feature width).
"""
from __future__ import annotations

import numpy as np
import torch

from vlground.errors import InputError


def split_chunks(n_chunks: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: sorted int64 chunk indices; ``val`` has ``max(1, round(n * fraction))``."""
    n_val = max(1, int(round(n_chunks * val_fraction)))
    if n_chunks - n_val < 1:
        raise InputError(f"corpus has {n_chunks} chunk(s): too few to hold out {n_val} for validation and train on the rest")
    perm = np.random.default_rng(split_seed).permutation(n_chunks)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def drop_cooc_chunks(train_idx: np.ndarray, cooc_chunks: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, dropped)`` sorted int64 training chunks: a run-level ``--drop-cooc``.

    ``cooc_chunks``: bool ``[n_chunks]``, chunk ``c`` holds a co-occurring pair of counted words
    (``Corpus.cooc_chunk_mask()``, the definition of ``vlground.datasets.cooc``).  With ``idx`` the ascending co-occurring chunks of
    ``train_idx`` and ``n = len(idx)``, exactly ``k = round(fraction * n)`` are dropped, namely
    ``sorted(idx[numpy.random.default_rng([seed, 1]).permutation(n)[:k]])``: the run's ``seed``
    chooses them, so every training seed leaves out a different subset; the validation chunks are
    never dropped (val losses stay comparable)."""
    train_idx = np.asarray(train_idx, dtype=np.int64)
    idx = train_idx[np.asarray(cooc_chunks, dtype=bool)[train_idx]]
    k = int(round(fraction * len(idx)))
    dropped = np.sort(idx[np.random.default_rng([seed, 1]).permutation(len(idx))[:k]]).astype(np.int64)
    kept = np.setdiff1d(train_idx, dropped, assume_unique=True).astype(np.int64)
    if not len(kept):
        raise InputError(f"drop_cooc {fraction}: no training chunk left")
    return kept, dropped


def chunk_order(train_idx: np.ndarray, n_needed: int, seed: int) -> np.ndarray:
    """int64 ``[n_needed]``: whole epochs, each a fresh permutation of ``train_idx``, truncated."""
    rng = np.random.default_rng(seed)
    n_epochs = -(-n_needed // len(train_idx))
    return np.concatenate([rng.permutation(train_idx) for _ in range(n_epochs)])[:n_needed].astype(np.int64)


def make_batch(chunks: np.ndarray, idx: np.ndarray, pad_id: int, images=None) -> dict[str, torch.Tensor]:
    """Model inputs for chunks ``idx`` of ``chunks`` (int32 ``[n_chunks, chunk_len]``).

    Returns ``input_ids`` int64 ``[len(idx), chunk_len]`` and ``labels`` (the same with pad
    positions set to ``-100``; models shift them), plus ``attention_mask`` (1 = real token)
    only when some position is padding (right padding: causal models never attend to it from a
    real token, so all-real batches skip the mask). With ``images`` (see the module docstring)
    image positions are also ``-100`` in ``labels`` (their input is a feature vector, not a token
    to predict) and ``image_mask`` / ``image_features`` are added.
    """
    ids = torch.from_numpy(np.asarray(chunks[np.asarray(idx)], dtype=np.int64))
    pad = ids == pad_id
    labels = ids.masked_fill(pad, -100)
    batch = {"input_ids": ids, "labels": labels}
    if bool(pad.any()):
        batch["attention_mask"] = (~pad).long()
    if images is not None:
        pos = np.asarray(images.positions[np.asarray(idx)])
        mask = torch.from_numpy(pos >= 0)
        batch["labels"] = labels.masked_fill(mask, -100)
        batch["image_mask"] = mask
        batch["image_features"] = torch.from_numpy(images.gather(pos[pos >= 0]))
    return batch


def merge_image_features(embeds: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``embeds`` [B, S, d] with the positions of ``mask`` [B, S] replaced, in row-major order,
    by ``features`` [n, d] (``n = mask.sum()``; ``[B, n_b, d]`` is read as its rows in order);
    gradients flow to both."""
    mask = mask.to(embeds.device, torch.bool)
    features = features.reshape(-1, features.shape[-1])
    if features.shape[0] != int(mask.sum()) or features.shape[-1] != embeds.shape[-1]:
        raise InputError(f"image features {tuple(features.shape)} do not fit {int(mask.sum())} image positions "
                         f"of width {embeds.shape[-1]} (the model width must equal the feature width)")
    return embeds.masked_scatter(mask[..., None], features.to(embeds.device, embeds.dtype))


def embed_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model kwargs for ``batch``: unchanged without images, else ``input_ids`` replaced by
    ``inputs_embeds`` (:func:`merge_image_features` over ``model.get_input_embeddings()``)."""
    if "image_features" not in batch:
        return batch
    out = dict(batch)
    features, mask = out.pop("image_features"), out.pop("image_mask")
    embeds = model.get_input_embeddings()(out.pop("input_ids"))
    out["inputs_embeds"] = merge_image_features(embeds, features, mask)
    return out
