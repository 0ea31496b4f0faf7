"""Where CHAT transcripts come from: ``.cha`` files, folders, and ``.zip`` archives.

TalkBank distributes corpora as zip archives; they are read in place, never unpacked. A file
inside an archive is named ``archive.zip!inner/path.cha``. A member larger than
:data:`MAX_MEMBER_BYTES` once expanded, or compressed more than :data:`MAX_RATIO` times (a
decompression bomb), or damaged, is a one-line :class:`~vlground.errors.InputError`.

Folders are walked with symbolic links followed; a dangling link, a link loop or an unreadable
folder is an error (never silently skipped): an :class:`InputError`, or the :class:`OSError`
naming the folder, which the CLI prints as one line.
"""
from __future__ import annotations

import logging
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from vlground.errors import InputError


log = logging.getLogger(__name__)

ZIP_SEPARATOR = "!"
#: largest expanded size of one zip member (a CHAT transcript is rarely over a few MB)
MAX_MEMBER_BYTES = 256 * 2**20
#: largest expansion ratio of a zip member over 1 MiB (CHAT text deflates ~4-10 times)
MAX_RATIO = 200


@dataclass(frozen=True)
class ChatSource:
    """The raw bytes of one transcript and the name problems are reported under."""

    display_path: str  #: ``dir/file.cha`` or ``archive.zip!inner/file.cha``
    data: bytes


def _is_cha(name: str) -> bool:
    return name.lower().endswith(".cha")


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(
                n for n in zf.namelist()
                if _is_cha(n) and not n.endswith("/") and "__MACOSX/" not in n
            )
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: cannot read zip archive ({exc})") from exc


def _read_member(zf: zipfile.ZipFile, path: Path, name: str) -> ChatSource:
    """One member's bytes, refusing bombs (size and ratio caps) and damaged data in one line."""
    shown = f"{path}{ZIP_SEPARATOR}{name}"
    info = zf.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:
        raise InputError(f"{shown}: expands to {info.file_size} bytes, larger than {MAX_MEMBER_BYTES} (refused)")
    if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(1, info.compress_size):
        raise InputError(f"{shown}: compression ratio {info.file_size / max(1, info.compress_size):.0f} over "
                         f"{MAX_RATIO} (a decompression bomb?; refused)")
    try:
        with zf.open(info) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)  # the header may lie about the size
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise InputError(f"{shown}: corrupt member of the zip archive ({exc})") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise InputError(f"{shown}: expands to more than {MAX_MEMBER_BYTES} bytes (refused)")
    return ChatSource(shown, data)


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(.cha files, .zip files)`` under ``folder``, symbolic links followed, each list sorted.

    Raises :class:`InputError` for a dangling link or a link loop; an unreadable folder raises
    its :class:`OSError`.
    """
    files: list[Path] = []
    zips: list[Path] = []

    def visit(d: Path, ancestors: frozenset) -> None:
        st = d.stat()
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            raise InputError(f"{d}: symbolic link loop (leads back to a folder above it)")
        ancestors = ancestors | {key}
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            p = Path(e.path)
            if e.is_symlink():
                try:
                    os.stat(p)
                except FileNotFoundError:
                    raise InputError(f"{p}: dangling symbolic link (its target {os.readlink(p)} is missing)") from None
                except OSError as exc:
                    if exc.errno == 40:  # ELOOP
                        raise InputError(f"{p}: symbolic link loop") from None
                    raise
            if e.is_dir():
                visit(p, ancestors)
            elif e.is_file():
                if _is_cha(e.name):
                    files.append(p)
                elif e.name.lower().endswith(".zip"):
                    zips.append(p)

    visit(folder, frozenset())
    return sorted(files), sorted(zips)


def _read(path: Path) -> ChatSource:
    try:
        return ChatSource(str(path), path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _plan(paths: Iterable[str | Path], warn: bool = True) -> Iterator[tuple[Path, list[str] | None]]:
    """(file, None) for a transcript on disk, (archive, member names) for a zip archive.

    A file or archive reached twice (given twice, or through a folder and a symbolic link to it)
    is planned once; with ``warn`` a warning line says how many were counted once."""
    paths = list(paths)
    if not paths:
        raise InputError("no input paths given")
    seen: dict[Path, Path] = {}
    repeats: list[tuple[Path, Path]] = []
    for item in _plan_all(paths):
        real = item[0].resolve()
        if real in seen:
            repeats.append((item[0], seen[real]))
            continue
        seen[real] = item[0]
        yield item
    if repeats and warn:
        first, same = repeats[0]
        log.warning("%d input file(s) given more than once (e.g. %s is %s); each counted once", len(repeats), first, same)


def _plan_all(paths: list) -> Iterator[tuple[Path, list[str] | None]]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files, zips = _walk(path)
            archives = [(z, _zip_members(z)) for z in zips]
            if not files and not any(m for _, m in archives):
                raise InputError(f"{path}: no .cha files found in this folder")
            yield from ((f, None) for f in files)
            yield from ((z, m) for z, m in archives if m)
        elif path.is_file():
            if path.suffix.lower() == ".zip":
                members = _zip_members(path)
                if not members:
                    raise InputError(f"{path}: no .cha files in this archive")
                yield path, members
            else:
                yield path, None
        elif path.exists():
            raise InputError(f"{path}: not a file or folder")
        else:
            raise InputError(f"{path}: no such file or folder")


def count_chat_sources(paths: Iterable[str | Path]) -> int:
    """How many transcripts :func:`iter_chat_sources` will yield (lists archives, reads no file)."""
    return sum(1 if members is None else len(members) for _, members in _plan(paths, warn=False))


def iter_chat_sources(paths: Iterable[str | Path]) -> Iterator[ChatSource]:
    """Yield every transcript under ``paths`` in a stable order.

    A path is a ``.cha`` file (any other non-zip file is read as CHAT too), a folder (searched
    recursively for ``*.cha`` and ``*.zip``), or a ``.zip`` archive (its ``*.cha`` members,
    read in place).

    Raises :class:`vlground.errors.InputError` for no paths, or a path that does not exist,
    cannot be read, or holds no ``.cha`` file. Each path is checked when it is reached, so
    the sources of earlier paths have been yielded by then.
    """
    for path, members in _plan(paths):
        if members is None:
            yield _read(path)
            continue
        with zipfile.ZipFile(path) as zf:
            for name in members:
                yield _read_member(zf, path, name)
