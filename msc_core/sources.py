"""Finding audio files: local folders, globs, file lists and fsspec URIs.

:func:`iter_audio_paths` streams paths without holding the whole listing:
local folders are walked with ``os.scandir`` (no ``stat`` per file beyond what
the directory entries give), sorted per directory so that the order is the
same on every run; globs and cloud prefixes are listed by their backend
(``glob``, fsspec ``find``) and sorted.
"""

from __future__ import annotations

import glob as globlib
import os
from typing import Iterator, Sequence

from .errors import InputError

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".wma", ".webm", ".mka", ".mp4", ".caf", ".w64", ".rf64",
})
"""Extensions (lower case, with the dot) taken from folders and globs; files named explicitly are always taken."""

FILE_LIST_EXTENSIONS = frozenset({".txt", ".lst"})
"""A source with one of these extensions is a file list: one path or URI per line."""

_GLOB_CHARS = frozenset("*?[")


def is_uri(source: str) -> bool:
    """Whether ``source`` names a remote fsspec location (``s3://``, ``gs://``, ...), not a local path."""
    return "://" in source and not source.startswith("file://")


def has_audio_extension(path: str) -> bool:
    """Whether ``path`` ends with one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


def iter_audio_paths(sources: Sequence[str]) -> Iterator[str]:
    """Audio files named by ``sources``, in a deterministic order.

    Parameters
    ----------
    sources : sequence of str
        Each one of:

        - a local folder: searched recursively, audio extensions only;
        - a glob (``*``, ``?``, ``[``; ``**`` recurses): matches with audio extensions;
        - a file list (``.txt``/``.lst``): one path or URI per line, blank lines and
          ``#`` comments skipped, relative paths taken from the list's folder;
        - an fsspec URI (``s3://bucket/prefix``, ``gs://...``): a prefix is listed
          with ``find``, a glob with ``glob``, an object is taken as is;
        - an audio file: taken as is, whatever its extension.

    Yields
    ------
    str
        Absolute local paths, or full URIs for remote sources.

    Raises
    ------
    InputError
        A source that does not exist or matches nothing.
    """
    for source in sources:
        found = False
        for path in _iter_one(str(source)):
            found = True
            yield path
        if not found:
            raise InputError(f"{source}: no audio files found")


def _iter_one(source: str) -> Iterator[str]:
    if is_uri(source):
        yield from _iter_remote(source)
        return
    local = source.removeprefix("file://")
    if _GLOB_CHARS & set(local):
        yield from sorted(os.path.abspath(p) for p in globlib.iglob(local, recursive=True)
                          if has_audio_extension(p) and os.path.isfile(p))
    elif os.path.isdir(local):
        yield from _walk(os.path.abspath(local))
    elif not os.path.exists(local):
        raise InputError(f"{source}: no such file or folder")
    elif os.path.splitext(local)[1].lower() in FILE_LIST_EXTENSIONS:
        yield from iter_file_list(local)
    else:
        yield os.path.abspath(local)


def _walk(folder: str) -> Iterator[str]:
    """Audio files under ``folder``, depth first, entries sorted by name in each folder."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        raise InputError(f"{folder}: cannot list ({error.strerror or error})") from error
    for entry in entries:
        if entry.is_dir():
            yield from _walk(entry.path)
        elif has_audio_extension(entry.name) and entry.is_file():
            yield entry.path


def _iter_remote(uri: str) -> Iterator[str]:
    import fsspec

    filesystem, path = fsspec.core.url_to_fs(uri)
    if _GLOB_CHARS & set(path):
        matches = [p for p in filesystem.glob(path) if has_audio_extension(p)]
    elif filesystem.isdir(path):
        matches = [p for p in filesystem.find(path) if has_audio_extension(p)]
    elif not filesystem.exists(path):
        raise InputError(f"{uri}: no such object or prefix")
    elif os.path.splitext(path)[1].lower() in FILE_LIST_EXTENSIONS:
        yield from iter_file_list(uri)
        return
    else:
        matches = [path]
    for match in sorted(matches):
        yield filesystem.unstrip_protocol(match)


def iter_file_list(list_path: str) -> Iterator[str]:
    """Paths in a file list (one per line), relative ones resolved against the list's folder.

    Blank lines and lines starting with ``#`` are skipped.
    """
    import fsspec

    base = os.path.dirname(list_path)
    with fsspec.open(list_path, "rt", encoding="utf-8") as lines:
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if is_uri(entry) or os.path.isabs(entry):
                yield entry
            elif is_uri(list_path):
                yield f"{base}/{entry}"
            else:
                yield os.path.abspath(os.path.join(base, entry))
