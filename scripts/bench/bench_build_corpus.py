"""Throughput of ``build-corpus`` against the CHAT reader alone, on the same generated files.

    python scripts/bench/bench_build_corpus.py [--files 200] [--utterances 300] [--repeat 3]

Generates transcripts with :mod:`vlground.datasets.chat_generator`, then times (best of
``--repeat``) (a) reading every file with ``iter_chat_sources`` + ``read_chat`` and (b) the
whole ``build_corpus`` (reading, encoding, vocabulary, chunks, co-occurrence, writing the
folder), and (c) pylangacq alone (the well-kept reader underneath: ``CHAT.from_strs`` +
``utterances()`` per file, ``strict=False``). Prints utterances per second and the ratios of the
build to our reader and to pylangacq (goal: >= 0.7 of the reader).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--utterances", type=int, default=300, help="utterances per file")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk-len", type=int, default=512)
    p.add_argument("--profile", action="store_true", help="print a cProfile of one build")
    a = p.parse_args(argv)

    from vlground.chat import iter_chat_sources, read_chat
    from vlground.datasets.chat_generator import generate_transcripts
    from vlground.datasets.childes_corpus import BuildCorpusConfig, build_corpus

    with tempfile.TemporaryDirectory(prefix="bench-build-corpus-") as tmp:
        chat = Path(tmp) / "chat"
        t0 = time.perf_counter()
        generate_transcripts(chat, n_files=a.files, seed=0, utterances_per_file=a.utterances)
        print(f"generated {a.files} files in {time.perf_counter() - t0:.2f} s")

        def read_only() -> int:
            return sum(len(read_chat(s).utterances) for s in iter_chat_sources([chat]))

        import pylangacq

        texts = [s.data.decode("utf-8") for s in iter_chat_sources([chat])]

        def pylangacq_only() -> int:
            return sum(len(pylangacq.CHAT.from_strs([t], parallel=False, strict=False).utterances()) for t in texts)

        def build(i: int) -> None:
            build_corpus(BuildCorpusConfig(inputs=[str(chat)], out=str(Path(tmp) / f"corpus{i}"),
                                           chunk_len=a.chunk_len, progress=False))

        n_utt = read_only()  # warm-up (imports, page cache)
        pylangacq_only()
        reader_s, build_s, plq_s = [], [], []
        for i in range(a.repeat):  # interleaved so all see the same machine load
            t = time.perf_counter()
            pylangacq_only()
            plq_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            read_only()
            reader_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            build(i)
            build_s.append(time.perf_counter() - t)
        r, b, q = min(reader_s), min(build_s), min(plq_s)
        print(f"utterances:   {n_utt}")
        print(f"reader alone: {n_utt / r:10.0f} utterances/s  ({r:.3f} s, best of {a.repeat})")
        print(f"build-corpus: {n_utt / b:10.0f} utterances/s  ({b:.3f} s, best of {a.repeat})")
        print(f"pylangacq:    {n_utt / q:10.0f} utterances/s  ({q:.3f} s, best of {a.repeat})")
        print(f"ratio build/our reader: {r / b:.2f}   build/pylangacq: {q / b:.2f}  (goal >= 0.70)")
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            build(a.repeat)
            prof.disable()
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
