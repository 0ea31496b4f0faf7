"""Measure CHAT readers on the fixtures: accept/flag counts and speed.

    python scripts/bench/bench_chat_reader.py [FIXTURES] [--batchalign WHEEL_DIR] [--repeat 40]
        [--generated 200] [--rounds 5] [--against GITREF]

Speed is measured on two corpora: (a) the valid fixtures with each body repeated ``--repeat``
times (bigger files, as in CHILDES; markup-heavy), (b) ``--generated`` transcripts of
:mod:`vlground.datasets.chat_generator` (seed 0, default options; 0 to skip). The readers are
timed in interleaved rounds (each round runs every reader once over the corpus), so a load
spike from other jobs hits all of them alike; the vlground/pylangacq ratio is reported per
round, with its median. ``--against REF`` adds the reader of ``vlground/chat`` as it was at
git revision REF (loaded from ``git show`` into a temporary package), timed in the same rounds,
for before/after ratios from one run. batchalign is optional: pass the folder of an unpacked wheel
(``pip download batchalign --no-deps`` + unzip) to import its Rust core without its
dependencies.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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


PYLANGACQ = "pylangacq words+tiers (strict=False)"
VLGROUND = "vlground read_chat_text"


def load_reader_at(ref: str):
    """``read_chat_text`` of ``vlground/chat`` at git revision ``ref``, as a separate package."""
    import importlib  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    names = subprocess.run(["git", "ls-tree", "--name-only", ref, "vlground/chat/"], cwd=root,
                           check=True, capture_output=True, text=True).stdout.split()
    pkg = Path(tempfile.mkdtemp()) / "vlground_chat_ref"
    pkg.mkdir()
    for name in names:
        if name.endswith(".py"):
            src = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=root, check=True,
                                 capture_output=True, text=True).stdout
            src = src.replace("vlground.chat.types", "\0")  # the types stay shared
            src = src.replace("from vlground.chat import", "from vlground_chat_ref import")
            src = src.replace("vlground.chat.", "vlground_chat_ref.").replace("\0", "vlground.chat.types")
            (pkg / Path(name).name).write_text(src, encoding="utf-8")
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("vlground_chat_ref.reader").read_chat_text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures", nargs="?", default="tests/fixtures/chat")
    ap.add_argument("--batchalign", help="folder holding an unpacked batchalign wheel")
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--generated", type=int, default=200, help="generated transcripts (0: skip)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", metavar="GITREF", help="also time vlground/chat at this git revision")
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
        PYLANGACQ: pylangacq_words,
        VLGROUND: lambda t: len(read_chat_text(t, "x.cha").utterances),
    }
    if args.against:
        ref_read = load_reader_at(args.against)
        speed[f"vlground @ {args.against}"] = lambda t: len(ref_read(t, "x.cha").utterances)
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
    corpora = {"fixtures x%d" % args.repeat: big}
    if args.generated:
        from vlground.datasets.chat_generator import generate_transcripts  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as tmp:
            paths = generate_transcripts(tmp, n_files=args.generated, seed=0)
            corpora[f"generated ({args.generated} files)"] = [p.read_text(encoding="utf-8") for p in paths]
    for label, texts in corpora.items():
        time_corpus(label, texts, speed, args.rounds)


def time_corpus(label: str, texts: list[str], speed: dict, rounds: int) -> None:
    n_utt = sum(t.count("\n*") for t in texts)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"\nspeed corpus {label}: {len(texts)} files, {mb:.2f} MB, {n_utt} utterances")
    times: dict[str, list[float]] = {name: [] for name in speed}
    for _ in range(rounds):
        for name, fn in speed.items():
            t0 = time.perf_counter()
            for t in texts:
                fn(t)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        best = min(ts)
        if name != PYLANGACQ:
            med = statistics.median(b / v for b, v in zip(times[PYLANGACQ], ts))
            name = f"{name} [{med:.2f}x]"
        print(f"{name:40s} {best:.3f} s  {len(texts) / best:7.0f} files/s  {n_utt / best:8.0f} utt/s (best of {rounds})")
    base = times[PYLANGACQ]
    ratios = [b / v for b, v in zip(base, times[VLGROUND])]
    print(f"vlground / pylangacq throughput per round: {' '.join(f'{r:.2f}' for r in ratios)}"
          f"  median {statistics.median(ratios):.2f}")

if __name__ == "__main__":
    main()
