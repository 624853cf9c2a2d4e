"""Whole directories on local disk or object stores (``s3://``, ``gs://``): exists, read, upload, fetch.

Model directories are small (a few MB) and are read and written whole, so a URI
model directory is built or loaded in a local temporary directory and copied.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterable, Iterator

import pyarrow.fs as pafs

from .errors import OutputExistsError


def is_uri(path: str) -> bool:
    """Whether ``path`` names a remote fsspec location (``s3://``, ``gs://``, ...), not a local path.

    ``file://`` URIs are local paths (:func:`local_path`).
    """
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """A local path or ``file://`` URI as a plain path (``path`` must not be remote: :func:`is_uri`)."""
    return path.removeprefix("file://")


def uri_prefix(path: str) -> str:
    """The ``scheme://`` that starts a remote ``path``, or "" for a local one."""
    return path[:path.index("://") + 3] if is_uri(path) else ""


def resolve_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for local paths and URIs (s3://, gs://)."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), local_path(path)
    return pafs.FileSystem.from_uri(path)


def file_sizes(folder: str) -> dict[str, int]:
    """Size in bytes of every file under ``folder`` (recursively), keyed by its path relative to ``folder``.

    Empty when ``folder`` does not exist.
    """
    filesystem, inner = resolve_filesystem(folder)
    inner = inner.rstrip("/")
    selector = pafs.FileSelector(inner, allow_not_found=True, recursive=True)
    return {info.path[len(inner) + 1:]: info.size for info in filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File}


def make_dirs(folders: Iterable[str]) -> None:
    """Create ``folders`` with their parents (a no-op on object stores, which have no folders)."""
    for folder in folders:
        filesystem, inner = resolve_filesystem(folder)
        filesystem.create_dir(inner, recursive=True)


def delete_files(folder: str, names: Iterable[str]) -> None:
    """Delete the files ``names`` (relative to ``folder``); files already gone are ignored."""
    filesystem, inner = resolve_filesystem(folder)
    for name in names:
        try:
            filesystem.delete_file(f"{inner.rstrip('/')}/{name}")
        except FileNotFoundError:
            continue


def exists(path: str) -> bool:
    """Whether a file or directory (a non-empty prefix on object stores) exists at ``path``."""
    filesystem, inner = resolve_filesystem(path)
    if filesystem.get_file_info(inner).type != pafs.FileType.NotFound:
        return True
    return is_uri(path) and bool(filesystem.get_file_info(pafs.FileSelector(inner, allow_not_found=True)))


def require_output_dir(path: str) -> None:
    """Refuse an output directory location that is taken by a file.

    Raises
    ------
    OutputExistsError
        ``path`` (a local path or URI) exists and is a file.
    """
    filesystem, inner = resolve_filesystem(path)
    if filesystem.get_file_info(inner).type == pafs.FileType.File:
        raise OutputExistsError(f"{path} is a file; the output must be a directory (new, or msc's own)")


def read_bytes(path: str) -> bytes:
    """The whole content of one file (local path or URI)."""
    filesystem, inner = resolve_filesystem(path)
    with filesystem.open_input_stream(inner) as handle:
        return handle.read()


def upload_dir(local_dir: str | os.PathLike, target: str, *, last: str | None = None) -> None:
    """Copy the files of ``local_dir`` (recursively) to ``target`` (local path or URI).

    ``last`` names a top-level file copied only after all the others, so that
    its presence at ``target`` means the copy is complete.
    """
    filesystem, inner = resolve_filesystem(target)
    local_dir = os.fspath(local_dir)
    names = sorted(os.listdir(local_dir), key=lambda name: (name == last, name))
    filesystem.create_dir(inner)
    for name in names:
        pafs.copy_files(os.path.join(local_dir, name), f"{inner}/{name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=filesystem)


@contextlib.contextmanager
def local_dir(path: str | os.PathLike) -> Iterator[str]:
    """A local directory with the content of ``path``: ``path`` itself, or a temporary copy of a URI."""
    path = os.fspath(path)
    if not is_uri(path):
        yield path
        return
    filesystem, inner = resolve_filesystem(path)
    with tempfile.TemporaryDirectory(prefix="msc-fetch-") as scratch:
        local = os.path.join(scratch, os.path.basename(inner.rstrip("/")) or "dir")
        os.mkdir(local)
        for info in filesystem.get_file_info(pafs.FileSelector(inner, allow_not_found=True, recursive=True)):
            if info.type == pafs.FileType.File:
                target = os.path.join(local, os.path.relpath(info.path, inner))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                pafs.copy_files(info.path, target, source_filesystem=filesystem,
                                destination_filesystem=pafs.LocalFileSystem())
        yield local


@contextlib.contextmanager
def output_dir(target: str, *, last: str | None = None) -> Iterator[str]:
    """A local directory to build ``target`` in: ``target`` itself, or a temporary one uploaded to a URI.

    The upload happens only when the block succeeds, with the file ``last``
    after all others (object stores have no directory rename, so that file
    marks a complete upload); callers check :func:`exists` before building.
    """
    if not is_uri(target):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="msc-out-") as scratch:
        local = os.path.join(scratch, os.path.basename(target.rstrip("/")) or "out")
        yield local
        upload_dir(local, target, last=last)
