"""``vlground build-corpus``: CHAT transcripts -> an ENV/LAN corpus folder.

    vlground build-corpus INPUT... --out DIR [--chunk-len 512] [--min-count N]
                          [--drop-cooc F --seed S] [--cooc-words FILE] [--strict] [--overwrite]
    vlground build-corpus --visdial visdial_1.0_train.json --images coco/train2014
                          --annotations instances_train2014.json --vision facebook/dinov2-base --out DIR
                          [--vision-init random --vision-seed S] [--features-cache DIR]

The source kind is chosen from the arguments (:func:`source_kind`); CHAT is the only one so
far. Another kind (Visual Dialog, issue 8) adds its options to :func:`add_arguments` in its
own group, a branch in :func:`source_kind` and an entry in :data:`BUILDERS`.
"""
from __future__ import annotations

import argparse
import sys

from vlground.errors import InputError

HELP = "build an ENV/LAN corpus from CHAT transcripts (.cha files, folders, .zip archives)"

#: how many skipped items the command prints (all are in stats.json)
SHOW_SKIPPED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help=".cha files, folders (recursive), .zip archives")
    parser.add_argument("--out", required=True, metavar="DIR", help="the corpus folder to write")
    common = parser.add_argument_group("corpus options")
    common.add_argument("--chunk-len", type=int, default=512, metavar="N", help="tokens per chunk (default 512)")
    common.add_argument("--min-count", type=int, default=1, metavar="N",
                        help="word forms (w<ENV>, w<LAN>, counted separately) seen fewer times become <unk> (default 1)")
    common.add_argument("--drop-cooc", type=float, default=0.0, metavar="F",
                        help="remove round(F * n) of the n chunks where w<ENV> and w<LAN> of a counted word co-occur "
                             "(default 0; docs/corpus.md)")
    common.add_argument("--cooc-words", metavar="FILE",
                        help="the words whose co-occurrence counts, one per line (e.g. the probe's targets); default: "
                             "every word with both forms but closed-class ones (%%mor tags, else a function-word list)")
    common.add_argument("--seed", type=int, default=0, metavar="S", help="seed choosing the dropped chunks (default 0)")
    common.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping it")
    common.add_argument("--overwrite", action="store_true", help="replace DIR if it exists (once the new one is complete)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    vd = parser.add_argument_group("Visual Dialog + images (the vision testbed; docs/vision-testbed.md)")
    vd.add_argument("--visdial", metavar="JSON", help="Visual Dialog file (visdial_1.0_train.json); selects this source")
    vd.add_argument("--images", metavar="DIR", help="folder of the dialogs' COCO images")
    vd.add_argument("--annotations", metavar="JSON", help="COCO instances file of those images (boxes, categories)")
    vd.add_argument("--vision", metavar="MODEL", default="facebook/dinov2-base", help="DINOv2 hub id or folder (default facebook/dinov2-base)")
    vd.add_argument("--vision-init", choices=("pretrained", "random"), default="pretrained",
                    help="pretrained weights, or the model's config with random weights (the control)")
    vd.add_argument("--vision-seed", type=int, default=0, metavar="S", help="seed of --vision-init random (default 0)")
    vd.add_argument("--features-cache", metavar="DIR", help="features cache folder (default: features-<model>-<hash> beside --out)")
    vd.add_argument("--limit", type=int, metavar="N", help="only the first N dialogs")
    vd.add_argument("--device", default="auto", help="where DINOv2 runs: auto (default), cpu, cuda")


def check_device(name: str) -> None:
    """One-line error for a device that does not exist here (``--device cuda`` without a GPU)."""
    if name == "auto":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name}: not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {name}: no such CUDA GPU here (use --device cpu or auto)")


def source_kind(args: argparse.Namespace) -> str:
    """Which builder the arguments ask for."""
    return "visdial" if getattr(args, "visdial", None) else "chat"


def _build_chat(args: argparse.Namespace):
    from vlground.datasets.childes_corpus import BuildCorpusConfig, build_corpus

    if not args.inputs:
        raise InputError("build-corpus: no INPUT given (pass .cha files, folders or .zip archives)")
    config = BuildCorpusConfig(
        inputs=list(args.inputs),
        out=args.out,
        chunk_len=args.chunk_len,
        min_count=args.min_count,
        drop_cooc=args.drop_cooc,
        seed=args.seed,
        cooc_words=args.cooc_words,
        strict=args.strict,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return build_corpus(config)


def _build_visdial(args: argparse.Namespace):
    from vlground.datasets.visdial_corpus import VisdialCorpusConfig, build_visdial_corpus

    missing = [f for f, v in (("--images", args.images), ("--annotations", args.annotations)) if not v]
    if missing or args.inputs:
        raise InputError(f"build-corpus --visdial: give {', '.join(missing)}" if missing else
                         "build-corpus --visdial: CHAT inputs cannot be mixed with --visdial")
    if args.cooc_words:
        raise InputError("build-corpus --visdial: --cooc-words is for CHAT corpora (every Visual Dialog pair is an object category)")
    check_device(args.device)
    config = VisdialCorpusConfig(
        visdial=args.visdial, images=args.images, annotations=args.annotations, vision=args.vision, out=args.out,
        vision_init=args.vision_init, vision_seed=args.vision_seed, features_cache=args.features_cache,
        chunk_len=args.chunk_len, min_count=args.min_count, drop_cooc=args.drop_cooc, seed=args.seed, limit=args.limit,
        device=args.device, overwrite=args.overwrite, progress=not args.no_progress,
    )
    return build_visdial_corpus(config)


#: source kind -> builder(args) -> corpus folder
BUILDERS = {"chat": _build_chat, "visdial": _build_visdial}


def _report(out) -> None:
    from vlground.corpus.format import Corpus

    corpus = Corpus.load(out)
    st = corpus.stats
    if corpus.meta.get("kind") == "visdial":
        return _report_visdial(out, st)
    skipped = st["skipped_files"] + st["skipped_utterances"]
    for line in skipped[:SHOW_SKIPPED]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) > SHOW_SKIPPED:
        print(f"skipped: ... and {len(skipped) - SHOW_SKIPPED} more (see {out}/stats.json)", file=sys.stderr)
    dropped = len(st["dropped_chunks"])
    print(
        f"{out}: {st['files']} files ({st['files_skipped']} skipped), "
        f"{st['utterances']} utterances ({st['utterances_skipped']} skipped), "
        f"{st['env_tokens']} ENV + {st['lan_tokens']} LAN tokens, vocab {st['vocab_size']}, {st['pairs']} pairs; "
        f"{st['chunks_kept']} chunks of {st['chunk_len']} ({st['cooc_chunks']} of {st['chunks']} co-occurring over "
        f"{st.get('cooc_words', st['pairs'])} counted words, {st.get('cooc_chunks_all_words', st['cooc_chunks'])} over all "
        f"words; {dropped} dropped)"
    )


def _report_visdial(out, st: dict) -> None:
    skipped = st["skipped"] + st["skipped_categories"]
    for line in skipped[:SHOW_SKIPPED]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) > SHOW_SKIPPED:
        print(f"skipped: ... and {len(skipped) - SHOW_SKIPPED} more (see {out}/stats.json)", file=sys.stderr)
    print(
        f"{out}: {st['dialogs']} dialogs ({st['dialogs_skipped']} skipped), {st['images']} images x "
        f"{st['image_tokens_per_image']} image tokens, {st['lan_tokens']} LAN tokens, vocab {st['vocab_size']}, "
        f"{st['pairs']} pairs; {st['chunks_kept']} chunks of {st['chunk_len']} ({st['cooc_chunks']} of {st['chunks']} "
        f"co-occurring, {len(st['dropped_chunks'])} dropped); features: {st['features_cache']} "
        f"({st['vision_calls']} vision forward passes)"
    )


def run(args: argparse.Namespace) -> int:
    out = BUILDERS[source_kind(args)](args)
    _report(out)
    return 0
