"""The training loop: :func:`train` reads as numbered steps.

1. resolve the config (bundled ``<arch>-<size>.json`` or ``--config``, then overrides);
2. open the corpus, draw the validation split and the chunk order;
3. build the model from the seed, AdamW + warm-up/decay schedule (so bad options fail before
   anything is written);
4. prepare the run folder under its lock (``RUN/.train.lock``: a second ``train`` of the same run
   is refused, naming the holder): new, or resume from the latest good checkpoint;
5. loop: batch -> loss -> backward -> clip -> step; log; checkpoint on the trajectory.

A checkpoint that cannot be *read* (permissions, I/O) stops the run with that error; only a
damaged one (:class:`~vlground.train.checkpoint.CorruptCheckpoint`) is set aside on resume.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

import vlground
from vlground.corpus.format import Corpus, write_json
from vlground.errors import InputError, VlgroundError
from vlground.train import checkpoint as ckpt
from vlground.train import tracking
from vlground.train.config import Hyper, TrainConfig, resolve
from vlground.train.data import chunk_order, drop_cooc_chunks, embed_inputs, make_batch, split_chunks
from vlground.train.models import WIDTH_KEYS, build_model, layer_kinds

log = logging.getLogger(__name__)

#: the lock file inside a run folder, held while one process trains it
LOCK = ".train.lock"
#: run.json keys that must match for --resume (others, like the version, may differ)
_SAME = ("arch", "seed", "corpus", "n_chunks", "chunk_len", "vocab_size", "model", "train")


def train(cfg: TrainConfig) -> Path:
    """Train one run into ``cfg.out`` (or, with ``cfg.seeds``, one per seed into
    ``cfg.out/seed-<k>/``); returns ``Path(cfg.out)``. Raises :class:`InputError` on bad input."""
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    with _quiet_transformers():
        for one in [cfg.for_seed(s) for s in cfg.seeds] if cfg.seeds else [cfg]:
            _train_one(one)
    return Path(cfg.out)


def lr_lambda(h: Hyper):
    """Multiplier of ``h.lr`` after ``step`` optimizer steps: linear warm-up, then decay to
    ``min_lr_ratio`` at ``h.steps``."""

    def f(step: int) -> float:
        if step < h.warmup_steps:
            return (step + 1) / (h.warmup_steps + 1)
        if h.schedule == "constant":
            return 1.0
        t = min(1.0, (step - h.warmup_steps) / max(1, h.steps - h.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * t)) if h.schedule == "cosine" else 1 - t
        return h.min_lr_ratio + (1 - h.min_lr_ratio) * shape

    return f


def make_optimizer(model: torch.nn.Module, h: Hyper) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices that are not embeddings."""
    emb = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 and id(p) not in emb else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": h.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=h.lr, betas=(h.beta1, h.beta2), eps=h.eps)


def _train_one(cfg: TrainConfig) -> None:
    from accelerate import Accelerator

    # 1. config
    arch, size, model_cfg, h, config_file = resolve(cfg)
    # 2. corpus, split, order
    corpus = Corpus.load(cfg.corpus)
    corpus.check_complete()  # every file train and probe need, before any work
    chunks = corpus.chunks
    vocab_size = len(corpus.vocab)
    if chunks.size and int(np.max(chunks)) >= vocab_size:
        raise InputError(f"{corpus.path / 'chunks.npy'}: token id {int(np.max(chunks))} >= vocabulary size {vocab_size}")
    images = None
    if corpus.meta.get("vision"):  # image features are the input embeddings of <image> positions
        from vlground.vision.features import corpus_images

        images = corpus_images(corpus)
        if model_cfg.get(WIDTH_KEYS[arch], images.dim) != images.dim:
            log.info("%s: model width %s -> %d (the corpus's feature width; no projector)", arch, model_cfg[WIDTH_KEYS[arch]], images.dim)
        model_cfg = {**model_cfg, WIDTH_KEYS[arch]: images.dim}
    train_idx, val_idx = split_chunks(corpus.n_chunks, h.val_fraction, h.split_seed)
    if h.drop_cooc > 0:  # run-level --drop-cooc: the run's seed chooses the co-occurring chunks left out
        train_idx, _ = drop_cooc_chunks(train_idx, corpus.cooc_chunk_mask(), h.drop_cooc, cfg.seed)
    B = h.batch_size
    spec = {
        "arch": arch, "size": size, "config_file": config_file, "seed": cfg.seed,
        "corpus": str(corpus.path.resolve()), "n_chunks": corpus.n_chunks, "chunk_len": corpus.chunk_len,
        "vocab_size": vocab_size, "batch_size": B, "model": model_cfg, "train": h.to_dict(),
        "layers": layer_kinds(arch, model_cfg),  # 1-based layer numbers per kind (attention, mamba2, lstm)
        "vlground_version": vlground.__version__,
    }
    run = Path(cfg.out)
    trackers = tracking.parse_log_with(cfg.log_with)
    accelerator = Accelerator(mixed_precision=_mixed_precision(h.mixed_precision), log_with=trackers or None,
                              project_dir=tracking.tracking_dir(run) if trackers else None)
    main = accelerator.is_main_process
    W, rank = accelerator.num_processes, accelerator.process_index
    if B % W:
        raise InputError(f"batch_size {B} is not divisible by the {W} processes")
    order = chunk_order(train_idx, h.steps * B, cfg.seed)
    # 3. model, optimizer, schedule (every option is checked before anything is written)
    torch.manual_seed(cfg.seed)
    model = build_model(arch, model_cfg, vocab_size, pad_id=corpus.pad_id, bos_id=corpus.vocab.get("<bos>"),
                        eos_id=corpus.vocab.get("<eos>"), max_len=corpus.chunk_len,
                        attn_implementation=h.attn_implementation)
    _smoke_test(model, chunks, order, corpus.pad_id, images, arch)
    optimizer = make_optimizer(model, h)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(h))
    # 4. run folder, under its lock
    from vlground import folders

    folders.check_output(run, "run", [cfg.corpus])  # not another command's folder, not inside one, not an input
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder; choose another --out")
    if run.is_dir() and not (run / "run.json").is_file() and any(not p.name.startswith(".") for p in run.iterdir()):
        raise InputError(f"{run}: exists and is not a vlground run folder (no run.json); choose another --out")
    lock = contextlib.nullcontext()
    if main:
        run.mkdir(parents=True, exist_ok=True)
        from vlground.locks import exclusive

        lock = exclusive(run / LOCK, str(run))
    with lock:
        _train_locked(cfg, run, spec, h, corpus, chunks, images, accelerator, model, optimizer, scheduler, order,
                      train_idx, val_idx)


def _train_locked(cfg, run, spec, h, corpus, chunks, images, accelerator, model, optimizer, scheduler, order,
                  train_idx, val_idx) -> None:
    main = accelerator.is_main_process
    W, rank = accelerator.num_processes, accelerator.process_index
    B, arch = h.batch_size, spec["arch"]
    resume_from = _prepare_run_dir(run, spec, cfg.resume)
    accelerator.wait_for_everyone()  # every process has read the folder before the main one writes
    if main:
        from vlground import folders

        folders.claim(run, "run")
    if resume_from == "done":
        log.info("%s: already complete (step %d)", run, h.steps)
        return
    if main:
        _clean_stale_checkpoint_temps(run)
        write_json(run / "run.json", spec)
        write_json(run / "split.json", {"split_seed": h.split_seed, "val_fraction": h.val_fraction,
                                         "n_train": int(len(train_idx)), "val": val_idx.tolist(),
                                         "drop_cooc": h.drop_cooc,  # run-level drop: the chunks neither val nor train
                                         "dropped": np.setdiff1d(np.setdiff1d(np.arange(corpus.n_chunks), val_idx), train_idx).tolist()})
        _save_npy(run / "order.npy", order)
    trackers = tracking.parse_log_with(cfg.log_with)
    if trackers:
        accelerator.init_trackers(f"{arch}-seed{cfg.seed}", config=tracking.flat_config(spec))
    start = 0
    if resume_from is not None:
        with accelerator.main_process_first():  # the main process moves damaged checkpoints aside
            start = _restore(run, model, optimizer, scheduler, main)
    model, optimizer = accelerator.prepare(model, optimizer)
    info = {"arch": arch, "seed": cfg.seed, "batch_size": B, "chunk_len": corpus.chunk_len,
            "vlground_version": vlground.__version__}
    ckpt_steps = set(ckpt.checkpoint_steps(h.steps, h.checkpoint_every, h.checkpoint_dense_until))
    val_chunks = val_idx[: h.val_max_chunks]

    def checkpoint(step: int) -> None:
        state = {"step": step, "data_position": step * B, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": _rng_state()}
        val = _val_loss(accelerator, model, chunks, val_chunks, B, corpus.pad_id, images)
        _check_finite(run, step, accelerator.unwrap_model(model), val)  # never a checkpoint of a diverged model
        if main:
            ckpt.save_checkpoint(run, step, accelerator.unwrap_model(model), corpus.path, state,
                                 {**info, "chunks_seen": step * B, "tokens_seen": step * B * corpus.chunk_len,
                                  "val_loss": val})
            _append_log(run, {"step": step, "val_loss": val})
            if trackers:
                accelerator.log({"val/loss": val}, step=step)
        accelerator.wait_for_everyone()

    if resume_from is None:
        checkpoint(0)
    # 5. loop
    from tqdm.auto import tqdm

    bar = tqdm(total=h.steps, initial=start, disable=not (main and cfg.progress), desc=f"{arch} seed {cfg.seed}")
    loss_sum, n_window, tokens = torch.zeros((), device=accelerator.device), 0, 0
    per = B // W
    model.train()
    embedder = accelerator.unwrap_model(model)
    window_start, excluded = time.perf_counter(), 0.0  # tokens/s leaves out checkpoint writes
    for step in range(start + 1, h.steps + 1):
        lo = (step - 1) * B + rank * per
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in make_batch(chunks, order[lo : lo + per], corpus.pad_id, images).items()}
        loss = model(**embed_inputs(embedder, batch)).loss
        if not bool(torch.isfinite(loss.detach())):
            raise Diverged(f"{run}: training diverged at step {step} (loss {float(loss):g}); "
                           f"{_kept(run)}; lower --lr (now {h.lr:g}) or raise --warmup-steps and train into a new --out")
        accelerator.backward(loss)
        # the norm is measured every step (logged as grad_norm); an infinite bound clips nothing
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), h.grad_clip if h.grad_clip > 0 else math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        n_window += 1
        tokens += B * corpus.chunk_len
        if step % h.log_every == 0 or step == h.steps:
            mean = (accelerator.reduce(loss_sum, "mean") if W > 1 else loss_sum).item() / n_window
            seconds = time.perf_counter() - window_start - excluded
            rec = {"step": step, "loss": round(mean, 5), "lr": scheduler.get_last_lr()[0],
                   "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
            if grad_norm is not None:
                rec["grad_norm"] = round(float(grad_norm), 5)
            if main:
                _append_log(run, rec)
                if trackers:
                    accelerator.log(tracking.scalars(rec, "train"), step=step)
            bar.set_postfix(loss=f"{mean:.3f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            loss_sum.zero_()
            n_window, tokens = 0, 0
            window_start, excluded = time.perf_counter(), 0.0
        bar.update(1)
        if step in ckpt_steps:
            t = time.perf_counter()
            checkpoint(step)
            excluded += time.perf_counter() - t
        if cfg.stop_after is not None and step >= cfg.stop_after:
            log.info("stopping after step %d (stop_after)", step)
            break
    bar.close()
    if trackers:
        accelerator.end_training()


class Diverged(VlgroundError):
    """The loss or the weights became NaN or infinite: training stops, no checkpoint of it is written."""


def _kept(run: Path) -> str:
    done = ckpt.list_checkpoints(run)
    return f"the checkpoints up to step {done[-1][0]} are kept" if done else "no checkpoint was written"


@torch.no_grad()
def _check_finite(run: Path, step: int, model: torch.nn.Module, val_loss: float) -> None:
    """:class:`Diverged` when a weight or the validation loss is NaN or infinite."""
    bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None or not math.isfinite(val_loss):
        what = f"weight {bad} is not finite" if bad is not None else f"validation loss {val_loss}"
        raise Diverged(f"{run}: training diverged by step {step} ({what}); {_kept(run)}; lower --lr or raise "
                       "--warmup-steps and train into a new --out")


@torch.no_grad()
def _smoke_test(model, chunks, order, pad_id: int, images, arch: str) -> None:
    """One forward pass on one chunk, so model kwargs that build but cannot run (a negative
    layer count ...) fail as a one-line error before anything is written. Uses no RNG."""
    if len(order) == 0:
        return
    was = model.training
    model.eval()
    try:
        model(**embed_inputs(model, make_batch(chunks, order[:1], pad_id, images)))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{arch}: bad model config ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    finally:
        model.train(was)


def _mixed_precision(mode: str) -> str:
    if mode != "auto":
        return mode
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _prepare_run_dir(run: Path, spec: dict, resume: bool):
    """None (start at step 0), "resume" or "done". Refuses to touch a folder holding something else."""
    meta = run / "run.json"
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder; choose another --out")
    if not meta.is_file():
        if run.exists() and any(p for p in run.iterdir() if not p.name.startswith(".")):
            raise InputError(f"{run}: exists and is not a vlground run folder (no run.json); choose another --out")
        if resume:
            log.info("%s: nothing to resume; starting a new run", run)
        return None
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta}: corrupt ({exc}); choose another --out") from None
    if not isinstance(old, dict):
        raise InputError(f"{meta}: corrupt (a JSON {type(old).__name__}, not an object); choose another --out")
    diff = [k for k in _SAME if old.get(k) != spec.get(k)]
    if diff:
        detail = "; ".join(_describe_diff(k, old.get(k), spec.get(k)) for k in diff[:3])
        raise InputError(f"{meta}: this folder holds a run with a different config ({detail}); choose another --out")
    if not resume:
        raise InputError(f"{run}: already holds this run; pass --resume to continue it or choose another --out")
    done = ckpt.list_checkpoints(run)
    if done and done[-1][0] == spec["train"]["steps"]:
        try:  # "already complete" only when the final checkpoint reads back
            ckpt.load_trainer_state(done[-1][1])
            ckpt.load_model(done[-1][1], attn_implementation=None)
            return "done"
        except ckpt.CorruptCheckpoint as exc:
            log.warning("%s: the final checkpoint is damaged (%s); resuming before it", run, exc)
    return "resume" if done else None


def _clean_stale_checkpoint_temps(run: Path) -> None:
    """Remove ``checkpoints/.step-<N>.tmp-<pid>-*`` folders of a killed trainer (we hold the run's lock)."""
    from vlground.corpus.format import clean_stale_temps

    root = run / ckpt.CHECKPOINTS
    names = {p.name[1:].split(".", 1)[0] for p in root.glob(".step-*")} if root.is_dir() else set()
    for name in sorted(names):
        for p in clean_stale_temps(root / name):
            log.info("removed %s (left by a killed run)", p)


def _describe_diff(key, old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        ks = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return ", ".join(f"{key}.{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in ks[:3])
    return f"{key}: {old!r} there, {new!r} now"


def _restore(run: Path, model, optimizer, scheduler, main: bool = True) -> int:
    """Load the latest checkpoint that reads back into model, optimizer, scheduler and RNG.

    A damaged one (:class:`~vlground.train.checkpoint.CorruptCheckpoint`) is renamed
    ``step-<N>.corrupt-<pid>`` (kept for inspection, no longer listed) with a warning, and the
    previous one is tried; one that cannot be read (an :class:`OSError`: permissions, I/O)
    stops the resume with that error and nothing is moved. Returns the step resumed from.
    """
    for step, path in reversed(ckpt.list_checkpoints(run)):
        try:
            state = ckpt.load_trainer_state(path)
            weights = ckpt.load_model(path, attn_implementation=None).state_dict()
            for key in ("step", "optimizer", "scheduler", "rng"):
                if key not in state:
                    raise ckpt.CorruptCheckpoint(f"{path / ckpt.TRAINER_STATE}: no {key!r}")
        except ckpt.CorruptCheckpoint as exc:
            bad = path.with_name(f"{path.name}.corrupt-{os.getpid()}")
            if main:
                os.replace(path, bad)
                log.warning("cannot resume from %s (%s); falling back to the previous checkpoint (moved it to %s)", path, exc, bad.name)
            continue
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        if main:
            _truncate_log(run, int(state["step"]))
            log.info("resuming %s from step %d", run, step)
        return int(state["step"])
    raise InputError(f"{run}: no checkpoint could be read back; choose another --out")


def _truncate_log(run: Path, step: int) -> None:
    """Drop train_log.jsonl lines after ``step`` (they are trained again)."""
    f = run / "train_log.jsonl"
    if not f.is_file():
        return
    keep = []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    tmp = f.with_name(f".{f.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
    os.replace(tmp, f)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def _val_loss(accelerator, model, chunks, val_idx: np.ndarray, B: int, pad_id: int, images=None) -> float:
    """Mean next-token loss over the held-out chunks (token-weighted); model returns to train mode."""
    model.eval()
    W, rank = accelerator.num_processes, accelerator.process_index
    mine = val_idx[rank::W]
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    for i in range(0, len(mine), B):
        batch = {k: v.to(accelerator.device) for k, v in make_batch(chunks, mine[i : i + B], pad_id, images).items()}
        n = (batch["labels"][:, 1:] != -100).sum()
        total += torch.stack([model(**embed_inputs(accelerator.unwrap_model(model), batch)).loss.double() * n, n.double()])
    if W > 1:
        total = accelerator.reduce(total, "sum")
    model.train()
    return round(float(total[0] / total[1].clamp(min=1)), 5)


def _append_log(run: Path, rec: dict) -> None:
    f = run / "train_log.jsonl"
    try:
        with open(f, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
    except OSError as exc:  # a write error names no file
        raise OSError(exc.errno, exc.strerror or str(exc), str(f)) from None


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, arr)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' per-file progress bars while checkpoints are written (restored after)."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()
