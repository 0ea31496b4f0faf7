"""Measure CHAT readers on the fixtures: accept/flag counts and speed.

    python scripts/bench/bench_chat_reader.py [FIXTURES] [--batchalign WHEEL_DIR] [--repeat 40]

Speed is measured on the valid fixtures with each body repeated ``--repeat`` times (bigger
files, as in CHILDES). batchalign is optional: pass the folder of an unpacked wheel
(``pip download batchalign --no-deps`` + unzip) to import its Rust core without its
dependencies.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pylangacq

from vlground.chat import read_chat_text


def pylangacq_ok(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pylangacq.CHAT.from_strs([text], parallel=False).utterances()
        return True
    except Exception:  # noqa: BLE001
        return False


def pylangacq_words(text: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pylangacq.CHAT.from_strs([text], parallel=False, strict=False)
        return len(r.words(by_utterance=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures", nargs="?", default="tests/fixtures/chat")
    ap.add_argument("--batchalign", help="folder holding an unpacked batchalign wheel")
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    root = Path(args.fixtures)
    valid_paths = sorted((root / "valid").rglob("*.cha"))
    valid = [p.read_text(encoding="utf-8") for p in valid_paths]
    invalid = [p.read_text(encoding="utf-8", errors="replace")
               for p in sorted((root / "invalid").rglob("*.cha"))]
    names = {t: p.name for t, p in zip(valid, valid_paths)}  # @Media must match the file name
    readers = {
        "pylangacq (strict)": pylangacq_ok,
        "vlground": lambda t: read_chat_text(t, names.get(t, "x.cha")).ok,
    }
    speed = {
        "pylangacq words+tiers (strict=False)": pylangacq_words,
        "vlground read_chat_text": lambda t: len(read_chat_text(t, "x.cha").utterances),
    }
    if args.batchalign:
        sys.path.insert(0, args.batchalign)
        from batchalign._core import CHATFile  # noqa: PLC0415

        def ba_ok(t: str) -> bool:
            try:
                CHATFile.parse(t)
                return True
            except ValueError:
                return False

        readers["batchalign CHATFile.parse"] = ba_ok
        speed["batchalign CHATFile.parse"] = ba_ok
    for name, ok in readers.items():
        acc = sum(ok(t) for t in valid)
        flagged = sum(not ok(t) for t in invalid)
        print(f"{name:40s} valid accepted {acc}/{len(valid)}  invalid flagged {flagged}/{len(invalid)}")
    big = []
    for t in valid:
        lines = t.splitlines(keepends=True)
        i = next((k for k, line in enumerate(lines) if line.startswith("*")), None)
        j = max(k for k, line in enumerate(lines) if line.startswith("@End"))
        if i is not None:
            big.append("".join(lines[:i] + lines[i:j] * args.repeat + lines[j:]))
    n_utt = sum(t.count("\n*") for t in big)
    mb = sum(len(t.encode()) for t in big) / 1e6
    print(f"speed corpus: {len(big)} files, {mb:.2f} MB, {n_utt} utterances")
    for name, fn in speed.items():
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for t in big:
                fn(t)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:40s} {best:.3f} s  {len(big) / best:7.0f} files/s  {n_utt / best:8.0f} utt/s")


if __name__ == "__main__":
    main()
