"""``vlground build-mismatch``: inpaint each annotated object -> mismatched images + annotations.json.

    vlground build-mismatch --inpaint --annotations instances.json --out DIR
        [--images DIR] [--model HUB_ID_OR_FOLDER] [--mask box|segmentation]
        [--remove | --prompt-template "a photo of a {}" --replacement random|next]
        [--seed S] [--steps N] [--guidance-scale G] [--resolution PX] [--dilate PX]
        [--limit N] [--device auto|cpu|cuda] [--dtype auto|float16|float32] [--no-progress]

Each option is a field of :class:`vlground.datasets.mismatch.MismatchConfig` (see its docstrings).
Runs again in the same ``--out`` keep the finished images and make only the missing ones.
"""
from __future__ import annotations

import argparse
import sys

from vlground.errors import InputError

HELP = "make mismatched images by inpainting annotated objects (Stable Diffusion 2 inpainting)"

#: how many skipped items the command prints (all are in annotations.json info.skipped)
SHOW_SKIPPED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlground.vision.inpaint import DEFAULT_MODEL

    parser.add_argument("--inpaint", action="store_true",
                        help="make the mismatch by inpainting (the only method so far, the default)")
    parser.add_argument("--annotations", required=True, metavar="FILE", help="COCO instances.json")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (finished images are kept)")
    parser.add_argument("--images", metavar="DIR", help="source image folder (default: the annotations' folder)")
    g = parser.add_argument_group("inpainting")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_DIR",
                   help=f"diffusers inpainting pipeline, hub id or local folder (default {DEFAULT_MODEL})")
    g.add_argument("--mask", choices=("box", "segmentation"), default="box",
                   help="repaint the box, or the segmentation where given (default box)")
    g.add_argument("--remove", action="store_true", help="fill with background instead of another object")
    g.add_argument("--prompt-template", default="a photo of a {}", metavar="T",
                   help="prompt; {} is the replacement category (default 'a photo of a {}')")
    g.add_argument("--remove-prompt", default="empty background", metavar="P",
                   help="prompt with --remove (default 'empty background')")
    g.add_argument("--negative-prompt", default=None, metavar="P", help="negative prompt (default none)")
    g.add_argument("--replacement", choices=("random", "next"), default="random",
                   help="replacement category among the others: seeded random, or next by id (default random)")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seed (per object with its id; default 0)")
    g.add_argument("--steps", type=int, default=50, metavar="N", help="diffusion steps (default 50)")
    g.add_argument("--guidance-scale", type=float, default=7.5, metavar="G", help="guidance scale (default 7.5)")
    g.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="longer side the pipeline works at, multiple of 8 (default: the model's, 512 for SD2)")
    g.add_argument("--dilate", type=int, default=0, metavar="PX", help="grow the mask by PX pixels (default 0)")
    r = parser.add_argument_group("run")
    r.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N annotations (by id)")
    r.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    r.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"),
                   help="auto: float16 on GPU, float32 on CPU")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json

    from vlground.cli.build_corpus import check_device
    from vlground.datasets.mismatch import MismatchConfig, build_mismatch

    check_device(args.device)

    config = MismatchConfig(
        annotations=args.annotations, out=args.out, images=args.images, model=args.model, mask=args.mask,
        remove=args.remove, prompt_template=args.prompt_template, remove_prompt=args.remove_prompt,
        negative_prompt=args.negative_prompt, replacement=args.replacement, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, resolution=args.resolution, dilate=args.dilate, limit=args.limit,
        device=args.device, dtype=args.dtype, progress=not args.no_progress,
    )
    path = build_mismatch(config)
    doc = json.loads(path.read_text(encoding="utf-8"))
    skipped = doc["info"]["skipped"]
    for line in skipped[:SHOW_SKIPPED]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) > SHOW_SKIPPED:
        print(f"skipped: ... and {len(skipped) - SHOW_SKIPPED} more (see {path})", file=sys.stderr)
    if not doc["images"]:  # nothing done that was asked: not a success
        first = f" (first: {skipped[0]})" if skipped else ""
        raise InputError(f"{args.annotations}: no mismatched image could be made{first}")
    print(f"{path.parent}: {len(doc['images'])} mismatched images, {len(skipped)} items skipped; see {path}")
    return 0
