"""Where CHAT transcripts come from: ``.cha`` files, folders, and ``.zip`` archives.

TalkBank distributes corpora as zip archives; they are read in place, never unpacked. A file
inside an archive is named ``archive.zip!inner/path.cha``.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from vlground.errors import InputError


ZIP_SEPARATOR = "!"


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


def _read(path: Path) -> ChatSource:
    try:
        return ChatSource(str(path), path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _plan(paths: Iterable[str | Path]) -> Iterator[tuple[Path, list[str] | None]]:
    """(file, None) for a transcript on disk, (archive, member names) for a zip archive."""
    paths = list(paths)
    if not paths:
        raise InputError("no input paths given")
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _is_cha(p.name))
            zips = sorted(p for p in path.rglob("*.zip") if p.is_file())
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
    return sum(1 if members is None else len(members) for _, members in _plan(paths))


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
                yield ChatSource(f"{path}{ZIP_SEPARATOR}{name}", zf.read(name))
