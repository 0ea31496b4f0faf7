"""``lens``: a tuned lens per layer (Belrose et al. 2023), fit once per checkpoint on held-out
text and saved beside it (``<checkpoint>/tuned-lens/``, reused while everything that determines
it matches); then the target's surprisal per layer in the match condition (env2lan) and the
held-out KL between each layer's lens and the model's own output distribution.

Layer ``k`` (1-based) is the residual stream after block ``k``, the block the flow probe calls
layer ``k``; layer 0 is the embedding output. At the last layer the lens is the model's own
unembedding (KL 0).

Token budget: the adapter supplies ``--lens-tokens`` held-out tokens (default 250k, or its whole
held-out split when smaller); the last tenth of those batches (at least one) is kept out of the
fit to measure the per-layer KL.  The model runs once over each part (``sdpa`` attention, no
grad) and every layer's hidden states are cached
(:class:`vlground.mechanism.lens_cache.HiddenStateCache`: in memory up to ``--lens-cache-gb``,
else in a mapped temporary file); the fit and the KL read the cache.  Each of the ``--lens-steps``
optimisation steps reads ``--lens-batch-tokens`` positions drawn at random from all fit tokens
(every token once before any twice), so a step costs the same whatever the budget, and the fit
costs one forward pass over the lens tokens plus the steps.  A note states the tokens the fit drew
from, the positions it read and the tokens the KL used.

The saved lens: written atomically with ``vlground-fit.json`` (the options, token counts and a
key over everything that determines the lens: the unembedding's hash, a digest of the model's
last hidden states on the held-out tokens, a digest of the fit tokens, the optimiser settings),
under a lock (``<checkpoint>/tuned-lens.lock``), so concurrent probes of one run fit it once and
never read half of one.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from vlground.engine.adapter import Capability
from vlground.lazy import torch
from vlground.mechanism.sites import hidden_state_layer
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched

log = logging.getLogger(__name__)

#: beside a saved lens: the options, token counts and key it was fit with (reuse only when the key matches)
FIT_INFO = "vlground-fit.json"


@dataclass
class LensRow:
    layer: int  #: 0 = embeddings, k = after block k (1-based)
    surprisal: float  #: mean target surprisal (nats) read through the lens, match items (env2lan)
    kl: float  #: held-out KL(model || lens) in nats per token
    fit_tokens: int  #: held-out tokens the lens's fit drew its positions from (also when a saved lens was reused)
    held_out_tokens: int  #: tokens the KL was measured on
    fit_positions: int = 0  #: distinct fit tokens whose positions entered the fit's loss: min(fit_tokens, steps x lens_batch_tokens)


class LensProbe(Probe):
    name = "lens"
    needs = frozenset({Capability.HIDDEN_STATES})
    doc = "tuned lens: target surprisal per layer, held-out KL per layer"

    @dataclass
    class Options:
        lens_steps: int = 150  #: optimisation steps of each tuned lens (each on --lens-batch-tokens positions)
        lens_batch_tokens: int = 1024  #: positions per optimisation step, drawn at random from all fit tokens (every token once before any twice): a step costs the head over the vocabulary for every layer at these positions whatever --lens-tokens is, so the fit is one forward pass over the lens tokens plus the steps; 1024 keeps the held-out KL of whole 4,096-token batches on a trained tiny Transformer (512: 2-3 percent higher; scripts/bench/bench_lens.py)
        lens_tokens: int = 250_000  #: held-out tokens to fit and evaluate each lens on (the adapter's whole held-out split if it has fewer)
        lens_cache_gb: float = 2.0  #: the lens tokens' hidden states (every layer) are held in memory up to this size in GiB, beyond it in a mapped temporary file

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.lens import (
            LensTrainConfig,
            TunedLens,
            fit_lens,
            lens_kl,
            lens_surprisal,
            positions_drawn,
            split_held_out,
        )
        from vlground.mechanism.lens_cache import HiddenStateCache, count_tokens

        adapter, loaded = ctx.adapter, ctx.loaded
        unembedding = adapter.unembed(loaded)
        if "n_tokens" in inspect.signature(adapter.lens_batches).parameters:
            inputs = adapter.lens_batches(loaded, n_tokens=self.options.lens_tokens)
        else:
            inputs = adapter.lens_batches(loaded)
        if unembedding is None or not inputs:
            return ProbeResult(notes=[f"lens: skipped for {ctx.key} (no unembedding or no held-out text)"])

        budget = int(self.options.lens_cache_gb * 2**30)
        train_in, held_in = split_held_out(inputs)
        in_sample = train_in is held_in  # a single batch: the KL is measured on the fit tokens
        held = HiddenStateCache.build(loaded.model, held_in, loaded.device, memory_bytes=budget)
        fit_tokens = sum(count_tokens(b) for b in train_in)
        if self.options.lens_batch_tokens < 1:
            from vlground.errors import InputError

            raise InputError(f"--lens-batch-tokens {self.options.lens_batch_tokens}: must be at least 1")
        train_cfg = LensTrainConfig(steps=self.options.lens_steps, batch_tokens=self.options.lens_batch_tokens)
        fit_positions = positions_drawn(fit_tokens, train_cfg.steps, self.options.lens_batch_tokens)
        fit_info = {"lens_tokens": self.options.lens_tokens, "lens_steps": self.options.lens_steps,
                    "lens_batch_tokens": self.options.lens_batch_tokens, "fit_tokens": fit_tokens,
                    "key": _lens_key(unembedding.hash(), held.digest(), train_in, train_cfg, self.options)}

        ckpt_dir = Path(loaded.checkpoint.path)
        lens_dir = ckpt_dir / "tuned-lens"
        lens, notes = None, []
        with _lens_lock(ckpt_dir, notes) as can_save:
            lens = _reuse(lens_dir, fit_info, unembedding, notes)
            if lens is None:
                train = held if in_sample else HiddenStateCache.build(loaded.model, train_in, loaded.device, memory_bytes=budget)
                lens = TunedLens.for_unembedding(held.n_layers, held.d_model, unembedding)
                fit_lens(lens, unembedding, train, train_cfg)
                del train
                if can_save:
                    try:
                        lens.save(lens_dir, extra={FIT_INFO: fit_info})
                    except OSError as exc:
                        notes.append(f"lens: cannot save beside the checkpoint ({exc})")
        kl = lens_kl(lens, unembedding, held)
        n_layers, held_tokens = held.n_layers, held.n_tokens()
        del held

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
        # row k reads hidden_states[k]: the output of 1-based layer k (0 = embeddings), see mechanism.sites.hidden_state_layer
        rows = [LensRow(hidden_state_layer(i), float(sp[i]), float(kl[i]) if i < n_layers else 0.0, fit_tokens, held_tokens,
                        fit_positions) for i in range(n_layers + 1)]
        notes.append(tokens_note(fit_tokens, held_tokens, in_sample, self.options.lens_tokens,
                                 (self.options.lens_steps, self.options.lens_batch_tokens)))
        return ProbeResult(tables={"lens": rows}, notes=notes)


def tokens_note(fit_tokens: int, held_tokens: int, in_sample: bool, lens_tokens: int,
                steps_batch: tuple[int, int] | None = None) -> str:
    """The one-line note of the tokens a lens was fit and evaluated on (``steps_batch``: the fit's
    ``(steps, positions per step)``, stated with the distinct tokens they read)."""
    from vlground.mechanism.lens import positions_drawn

    budget = (f"the whole held-out split, fewer than --lens-tokens {lens_tokens}" if fit_tokens + (0 if in_sample else held_tokens) < lens_tokens
              else f"--lens-tokens {lens_tokens}")
    read = ""
    if steps_batch is not None:
        steps, batch = steps_batch
        read = (f" ({steps} steps x {min(batch, fit_tokens)} positions drawn at random: "
                f"{positions_drawn(fit_tokens, steps, batch)} distinct tokens read)")
    if in_sample:
        return (f"lens: fit on {fit_tokens} held-out tokens{read} ({budget}); KL per layer on the same tokens "
                "(a single held-out batch: in-sample)")
    return f"lens: fit on {fit_tokens} held-out tokens{read}, KL per layer on {held_tokens} other held-out tokens ({budget})"


def _lens_key(unembedding_hash: str, model_digest: str, train_in, train_cfg, options) -> str:
    """sha256 over everything that determines the fitted lens."""
    h = hashlib.sha256()
    for b in train_in:
        for name in sorted(b):
            v = b[name]
            if torch.is_tensor(v):
                v = v.detach().cpu().contiguous()
                h.update(f"{name}:{v.dtype}:{tuple(v.shape)}".encode())
                h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    spec = {"unembedding": unembedding_hash, "hidden_states": model_digest, "fit_inputs": h.hexdigest(),
            "train": asdict(train_cfg), "lens_steps": options.lens_steps, "lens_tokens": options.lens_tokens,
            "lens_batch_tokens": options.lens_batch_tokens}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _reuse(lens_dir: Path, fit_info: dict, unembedding, notes: list[str]):
    """The saved lens when it was fit the same way (same key), else None (with a note why)."""
    from vlground.mechanism.errors import MechanismError
    from vlground.mechanism.lens import TunedLens

    if not lens_dir.is_dir():
        return None
    try:
        saved = json.loads((lens_dir / FIT_INFO).read_text()) if (lens_dir / FIT_INFO).is_file() else None
        if saved != fit_info:
            shown = {k: v for k, v in fit_info.items() if k != "key"}
            was = None if not isinstance(saved, dict) else {k: v for k, v in saved.items() if k != "key"}
            if was != shown:
                raise MechanismError(f"fit with {was or 'unrecorded options'}, not {shown}")
            raise MechanismError("fit for other weights, tokens or optimiser settings (its key differs)")
        return TunedLens.load(lens_dir, unembedding)
    except (MechanismError, OSError, ValueError) as exc:
        notes.append(f"lens: {lens_dir} not reused ({exc}); retrained")
        return None


@contextlib.contextmanager
def _lens_lock(ckpt_dir: Path, notes: list[str]):
    """Hold ``<checkpoint>/tuned-lens.lock`` (waiting for another probe that is fitting this
    checkpoint's lens); yields whether the lens may be saved there (a hub id or a read-only
    folder: fit in memory only)."""
    from filelock import FileLock, Timeout

    if not ckpt_dir.is_dir():
        yield False
        return
    lock = FileLock(str(ckpt_dir / "tuned-lens.lock"), is_singleton=False)
    try:
        try:
            lock.acquire(timeout=1)
        except Timeout:  # another probe is fitting this checkpoint's lens: wait, then reuse it
            log.info("lens: waiting for another process fitting the lens of %s", ckpt_dir)
            lock.acquire()
    except OSError as exc:  # a read-only checkpoint folder (Timeout is caught above)
        notes.append(f"lens: cannot save beside the checkpoint ({exc})")
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
