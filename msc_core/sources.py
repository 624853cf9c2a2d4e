"""Finding audio files, labelling them by dataset layout, and splitting them by group.

Listing, labelling and splitting are pure functions of the paths (and of a
manifest's rows): nothing here opens an audio file.

:func:`iter_audio_paths` streams paths without holding the whole listing:
local folders are walked with ``os.scandir`` (no ``stat`` per file beyond what
the directory entries give), sorted per directory so that the order is the
same on every run; globs and cloud prefixes are listed by their backend
(``glob``, fsspec ``find``) and sorted.

:func:`iter_items` labels each path under a layout (:data:`LAYOUTS`):

- ``gtzan``: ``.../genres_original/<genre>/<track>.wav`` -> music, genre kept, group = the track;
- ``librispeech``: ``.../<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` -> speech, group = the speaker;
- ``folders``: a folder named ``music`` or ``speech`` anywhere in the path -> that label, group = the file;
- ``manifest``: CSV/Parquet rows ``path,label[,group][,genre]`` -> as given, group defaults to the file;
- ``unlabelled``: label null, group = the file.

``auto`` treats ``.csv``/``.parquet`` sources as manifests and labels every
other path by the first layout above that fits it, else as unlabelled.

:func:`assign_split` puts a group into train/val/test by hashing it with a seed,
so no group straddles two splits and adding files never moves existing ones.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from .config import CLASSES
from .errors import InputError
from .storage import is_uri, local_path

log = logging.getLogger("msc.sources")

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".wma", ".webm", ".mka", ".mp4", ".caf", ".w64", ".rf64",
})
"""Extensions (lower case, with the dot) taken from folders and globs; files named explicitly are always taken."""

FILE_LIST_EXTENSIONS = frozenset({".txt", ".lst"})
"""A source with one of these extensions is a file list: one path or URI per line."""

MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet"})
"""A source with one of these extensions is a manifest (layout ``manifest``)."""

LAYOUTS = ("auto", "gtzan", "librispeech", "folders", "manifest", "unlabelled")
"""Values of ``layout`` for :func:`iter_items` (and of ``msc featurize --layout``)."""

SPLITS = ("train", "val", "test")

_GLOB_CHARS = frozenset("*?[")
_LIBRISPEECH_NAME = re.compile(r"^(\d+)-(\d+)-\d+$")


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
        - a glob (``*``, ``?``, ``[``; ``**`` recurses): matches with audio extensions
          that are not folders;
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
    local = local_path(source)
    if _GLOB_CHARS & set(local):
        yield from sorted(os.path.abspath(p) for p in globlib.iglob(local, recursive=True)
                          if has_audio_extension(p) and not os.path.isdir(p))
    elif os.path.isdir(local):
        yield from _walk(os.path.abspath(local))
    elif not os.path.exists(local):
        raise InputError(f"{source}: no such file or folder")
    elif os.path.splitext(local)[1].lower() in FILE_LIST_EXTENSIONS:
        yield from iter_file_list(local)
    else:
        yield os.path.abspath(local)


def _walk(folder: str, *, visited: set[tuple[int, int]] | None = None) -> Iterator[str]:
    """Audio files under ``folder``, depth first, entries sorted by name in each folder.

    Symbolic links to folders are followed once each (a link back to an
    ancestor is not walked again). An entry with an audio extension that is
    not a folder is listed even when it cannot be read (a dangling link, a link
    loop, no permission) or is no regular file (a FIFO, a socket, a device),
    so the job reports it as a failed file rather than losing it silently;
    the decoder refuses non-regular files without opening them (opening a FIFO
    would block). A sub-folder that cannot be listed is skipped with a
    warning; only an unlistable top folder is an error.
    """
    top = visited is None
    visited = set() if top else visited
    try:
        identity = os.stat(folder)
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        if top:
            raise InputError(f"{folder}: cannot list ({error.strerror or error})") from error
        log.warning("skipping folder %s: cannot list it (%s)", folder, error.strerror or error)
        return
    if (identity.st_dev, identity.st_ino) in visited:
        return
    visited.add((identity.st_dev, identity.st_ino))
    for entry in entries:
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        if is_folder:
            yield from _walk(entry.path, visited=visited)
        elif has_audio_extension(entry.name):
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


# ---------------------------------------------------------------------------- layouts

@dataclass(frozen=True)
class Item:
    """One audio file with what its layout says about it.

    Attributes
    ----------
    path : str
        Absolute local path or URI.
    label : str or None
        One of :data:`msc_core.config.CLASSES`, or None when unlabelled.
    group : str
        Unit that must not straddle splits (track, speaker, file).
    genre : str or None
        Finer class when the layout gives one (GTZAN genre).
    split : str or None
        A split fixed by a manifest's ``split`` column; None lets
        :func:`assign_split` decide from the group.
    """

    path: str
    label: str | None
    group: str
    genre: str | None = None
    split: str | None = None


def gtzan_item(path: str) -> Item | None:
    """``.../genres_original/<genre>/<track>.<ext>`` -> music, genre kept, group ``gtzan:<track>``; else None."""
    parts = _parts(path)
    if len(parts) >= 3 and parts[-3] == "genres_original":
        track = os.path.splitext(parts[-1])[0]
        return Item(path, "music", f"gtzan:{track}", parts[-2])
    return None


def librispeech_item(path: str) -> Item | None:
    """``.../<speaker>/<chapter>/<speaker>-<chapter>-<n>.<ext>`` -> speech, group ``librispeech:<speaker>``."""
    parts = _parts(path)
    if len(parts) < 3:
        return None
    match = _LIBRISPEECH_NAME.match(os.path.splitext(parts[-1])[0])
    if match and match.groups() == (parts[-3], parts[-2]):
        return Item(path, "speech", f"librispeech:{parts[-3]}")
    return None


def folders_item(path: str) -> Item | None:
    """A path with a folder named after a class (``music``, ``speech``, ...; the deepest wins) -> that label, group = the file."""
    for part in reversed(_parts(path)[:-1]):
        if part.lower() in CLASSES:
            return Item(path, part.lower(), path)
    return None


def unlabelled_item(path: str) -> Item:
    """No label; the file is its own group."""
    return Item(path, None, path)


_LAYOUT_RULES = {"gtzan": gtzan_item, "librispeech": librispeech_item, "folders": folders_item}


def label_path(path: str, *, layout: str = "auto") -> Item:
    """Label one listed path under ``layout`` (any of :data:`LAYOUTS` but ``manifest``).

    Raises
    ------
    InputError
        An explicit layout the path does not fit, or an unknown layout.
    """
    if layout == "unlabelled":
        return unlabelled_item(path)
    if layout == "auto":
        for rule in _LAYOUT_RULES.values():
            item = rule(path)
            if item is not None:
                return item
        return unlabelled_item(path)
    rule = _LAYOUT_RULES.get(layout)
    if rule is None:
        raise InputError(f"layout {layout!r} does not apply to listed files (layouts: {', '.join(LAYOUTS)})")
    item = rule(path)
    if item is None:
        raise InputError(f"{path} does not fit the {layout} layout ({rule.__doc__.split(' -> ')[0].strip()})")
    return item


def _parts(path: str) -> list[str]:
    return [part for part in re.split(r"[/\\]", path) if part]


def is_manifest(source: str) -> bool:
    """Whether ``source`` names a CSV or Parquet manifest (by extension)."""
    return os.path.splitext(str(source))[1].lower() in MANIFEST_EXTENSIONS


def iter_items(sources: Sequence[str], *, layout: str = "auto", allow_outside: bool = False) -> Iterator[Item]:
    """Labelled files of ``sources`` in a deterministic order.

    Parameters
    ----------
    sources : sequence of str
        As for :func:`iter_audio_paths`, plus manifests (``.csv``/``.parquet``).
    layout : str
        One of :data:`LAYOUTS`; ``"auto"`` detects it per manifest and per path.
    allow_outside : bool
        Let manifests name files outside their own folder (absolute paths, ``..``, URIs).

    Raises
    ------
    InputError
        Unknown layout, missing sources, malformed manifests, paths that do not fit an explicit layout.
    """
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    for source in sources:
        if is_manifest(source):
            if layout not in ("auto", "manifest"):
                raise InputError(f"{source} is a manifest but --layout is {layout}")
            yield from iter_manifest(source, allow_outside=allow_outside)
        elif layout == "manifest":
            raise InputError(f"{source} is not a manifest (.csv or .parquet)")
        else:
            for path in iter_audio_paths([source]):
                yield label_path(path, layout=layout)


def iter_manifest(manifest: str, *, allow_outside: bool = False, batch_rows: int = 65536) -> Iterator[Item]:
    """Items of a CSV or Parquet manifest: ``path``, ``label`` and optional ``group``, ``genre``, ``split``.

    Read in record batches, so a manifest of millions of rows is never held whole.
    Relative paths are resolved against the manifest's folder; unless
    ``allow_outside``, a path whose real location (symbolic links resolved)
    leaves that folder is refused. Numeric cells are read as their decimal
    text (group ``0`` is the group "0", ``7.0`` is "7"). An empty, null or
    NaN label means unlabelled; a missing, empty or NaN group means the file itself.
    A ``split`` column (train/val/test) fixes splits as given, e.g. to hold out
    whole sources; the manifest's author then answers for groups not straddling.

    Raises
    ------
    InputError
        Missing columns, labels outside :data:`msc_core.config.CLASSES`, splits outside :data:`SPLITS`, empty
        paths, or (unless ``allow_outside``) paths leaving the manifest's folder.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from .storage import resolve_filesystem

    filesystem, inner = resolve_filesystem(manifest)
    remote = is_uri(manifest)
    base = manifest.rsplit("/", 1)[0] if remote else os.path.dirname(os.path.abspath(manifest))
    try:
        handle = filesystem.open_input_file(inner)
    except OSError as error:
        raise InputError(f"{manifest}: cannot open the manifest ({error})") from error
    with handle:
        try:
            if manifest.lower().endswith(".parquet"):
                reader = pq.ParquetFile(handle)
                names, batches = reader.schema_arrow.names, reader.iter_batches(batch_size=batch_rows)
            else:
                convert = pacsv.ConvertOptions(strings_can_be_null=True, column_types={
                    name: "string" for name in ("path", "label", "group", "genre", "split")})
                batches = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=1 << 22),
                                         convert_options=convert)
                names = batches.schema.names
            missing = {"path", "label"} - set(names)
            if missing:
                raise InputError(f"{manifest}: manifest lacks column(s) {', '.join(sorted(missing))} "
                                 "(needs a header row path,label[,group][,genre][,split])")
            yield from _manifest_items(batches, manifest=manifest, base=base, remote=remote,
                                       allow_outside=allow_outside)
        except pa.ArrowException as error:
            raise InputError(f"{manifest}: not a readable manifest ({error})") from error


def _manifest_items(batches, *, manifest: str, base: str, remote: bool, allow_outside: bool) -> Iterator[Item]:
    row = 1
    for batch in batches:
        columns = batch.to_pydict()
        count = batch.num_rows
        for path, label, group, genre, split in zip(columns["path"], columns["label"],
                                                    columns.get("group", [None] * count),
                                                    columns.get("genre", [None] * count),
                                                    columns.get("split", [None] * count)):
            row += 1
            resolved = _resolve_manifest_path(_text(path), base=base, remote=remote, allow_outside=allow_outside,
                                              where=f"{manifest} row {row}")
            label = (_text(label) or "").lower() or None
            if label is not None and label not in CLASSES:
                raise InputError(f"{manifest} row {row}: label {label!r} is not one of {', '.join(CLASSES)} "
                                 "or empty")
            split = (_text(split) or "").lower() or None
            if split is not None and split not in SPLITS:
                raise InputError(f"{manifest} row {row}: split {split!r} is not one of {', '.join(SPLITS)} "
                                 "or empty")
            yield Item(resolved, label, _text(group) or resolved, _text(genre), split if label else None)


def _text(value) -> str | None:
    """A manifest cell as text: numbers as their decimal text (``0`` is group "0", ``3.0`` is "3"),
    strings stripped; None, NaN and empty strings give None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() or None


def _resolve_manifest_path(path: str | None, *, base: str, remote: bool, allow_outside: bool, where: str) -> str:
    """A manifest row's path made absolute, refusing escapes from ``base`` unless allowed."""
    if not path or not str(path).strip():
        raise InputError(f"{where}: empty path")
    path = str(path).strip()
    if is_uri(path) or os.path.isabs(path):
        if not allow_outside:
            raise InputError(f"{where}: {path} is absolute; manifests may only name files under their own "
                             "folder (pass --allow-outside to allow it)")
        return path
    if remote:
        joined = f"{base}/{path}"
        escapes = ".." in _parts(path)
    else:
        joined = os.path.normpath(os.path.join(base, path))
        real_base = os.path.realpath(base)
        escapes = not os.path.realpath(joined).startswith(real_base.rstrip(os.sep) + os.sep)  # links resolved
    if escapes and not allow_outside:
        raise InputError(f"{where}: {path} leaves the manifest's folder (pass --allow-outside to allow it)")
    return joined


# ---------------------------------------------------------------------------- splits

def parse_split(text: str) -> tuple[float, float, float]:
    """``"70/15/15"`` -> (0.7, 0.15, 0.15): train/val/test fractions (any positive scale, normalized).

    Raises
    ------
    InputError
        Not three non-negative numbers with a positive sum.
    """
    try:
        parts = [float(part) for part in text.split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise InputError(f"split {text!r} must be three non-negative numbers like 70/15/15")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def assign_split(group: str, *, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> str:
    """The split of ``group``: a seeded hash of the group placed on the cumulative fractions.

    Deterministic, independent of every other group (adding files never moves
    existing ones), and the same for every file of a group.

    Returns
    -------
    str
        ``"train"``, ``"val"`` or ``"test"``.
    """
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    cumulative = 0.0
    for name, fraction in zip(SPLITS, fractions):
        cumulative += fraction
        if position < cumulative:
            return name
    return next(name for name, fraction in zip(reversed(SPLITS), reversed(fractions)) if fraction > 0)
