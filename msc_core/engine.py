"""The incremental, transactional engine shared by every archive job (featurize, infer).

A run goes through the same steps whatever the job computes per file::

    list sources -> fingerprint each file -> deduplicate by resolved location
      -> plan chunks against the last committed snapshot -> process (the job, on Ray)
      -> commit per batch of chunks -> clean up what the new snapshot no longer references

Listing and planning are pure functions of the sources and of the snapshot:

- :func:`list_entries` labels, splits, fingerprints (size and mtime on local
  disks; ETag, version, size and mtime on object stores) and deduplicates the
  listing by resolved location (``os.path.realpath`` locally, the URI
  elsewhere). A file listed twice with the same metadata counts once; listed
  with conflicting labels, groups or splits it is an :class:`InputError`. An
  empty listing is an :class:`InputError` too, raised before anything changes.
- :func:`plan` compares the listing with the committed file records: new files,
  changed files (other fingerprint, metadata or job settings) and files of
  chunks whose parts are missing or damaged are processed; chunks holding a
  changed or deleted file are superseded, and their other files are
  processed again with them, so a part never has to be rewritten in place.

The snapshot
------------
Every job keeps one record per processed file in a Delta Lake table,
``OUT/_files`` (:class:`FileRecords`): location, fingerprint, key (metadata and
settings), the chunk that holds its results and that chunk's part files with
their sizes. Part files are written complete under their final names before
they are committed; a commit replaces the records of the superseded chunks
and adds those of the new ones in one Delta transaction (``overwrite`` with a
``chunk IN (...)`` predicate), so a reader of ``_files`` sees one snapshot or
the next, never a mix. A killed run keeps every batch it committed; what it
wrote after its last commit is ignored by readers and deleted by the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa

from .errors import InputError
from .sources import Item, assign_split
from .storage import is_uri, local_path, uri_prefix

RECORDS_DIR = "_files"
"""Folder (under a job's output) of the Delta table of file records."""

RECORD_FIELDS = [
    ("location", pa.string()), ("path", pa.string()), ("fingerprint", pa.string()), ("key", pa.string()),
    ("chunk", pa.string()), ("parts", pa.string()),
]
"""Columns every job's records have; jobs add their own after these (see :class:`FileRecords`).

``parts`` is the JSON list of ``[name, bytes]`` of the chunk's part files (the
same for every record of a chunk).
"""


@dataclass(frozen=True)
class Entry:
    """One listed file, labelled, split and fingerprinted.

    Attributes
    ----------
    path : str
        As listed (absolute local path or URI); what outputs show.
    location : str
        Resolved location: the real path locally (symbolic links resolved), the URI elsewhere.
    fingerprint : str
        ``size:mtime_ns`` locally; ``etag:version:size:mtime`` on object stores; ``""`` when unknown.
    label, group, genre, split : str or None
        As :class:`msc_core.sources.Item`, ``split`` filled in for labelled files.
    """

    path: str
    location: str
    fingerprint: str
    label: str | None = None
    group: str | None = None
    genre: str | None = None
    split: str | None = None

    def key(self, settings: str) -> str:
        """What, beside the bytes, a file's result depends on: its metadata and the job's ``settings``."""
        return json.dumps([self.label, self.group_key, self.genre, self.split, settings])

    @property
    def group_key(self) -> str | None:
        """The group, with a file's default group (its own path) taken as its location."""
        return self.location if self.group == self.path else self.group


@dataclass
class Listing:
    """A deduplicated listing: entries in listing order and how many rows were duplicates."""

    entries: list[Entry]
    duplicates: int = 0


def location_of(path: str) -> str:
    """The resolved location of a listed path: its real path locally, the URI (no trailing ``/``) elsewhere."""
    if is_uri(path):
        return path.rstrip("/")
    return os.path.realpath(local_path(path))


_FINGERPRINTED_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def fingerprint_of(path: str, *, filesystems: dict | None = None) -> str:
    """What changes when a file's content does: size and mtime, plus ETag and version on object stores.

    Local files are ``stat``-ed (one system call); object-store URIs take
    their listing details (fsspec ``info``). Other URIs (``http://``...) and
    files that cannot be ``stat``-ed give ``""``: they are processed once and
    then taken as unchanged.
    """
    if not is_uri(path):
        try:
            stat = os.stat(local_path(path))
        except OSError:
            return ""
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    protocol = uri_prefix(path).removesuffix("://").lower()
    if protocol not in _FINGERPRINTED_PROTOCOLS:
        return ""
    import fsspec

    filesystems = {} if filesystems is None else filesystems
    if protocol not in filesystems:
        filesystems[protocol] = fsspec.core.url_to_fs(path)[0]
    filesystem = filesystems[protocol]
    try:
        info = filesystem.info(filesystem._strip_protocol(path))
    except (OSError, ValueError):
        return ""
    parts = [info.get(name) for name in ("ETag", "VersionId", "size", "LastModified", "mtime", "generation")]
    return ":".join("" if value is None else str(value) for value in parts)


def list_entries(items: Iterable[Item], *, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                 sources: Sequence[str] = ()) -> Listing:
    """Fingerprint and deduplicate a labelled listing (see the module docstring).

    Parameters
    ----------
    items : iterable of Item
        :func:`msc_core.sources.iter_items` (or unlabelled items for infer).
    fractions, seed
        How labelled files without a fixed split are split (:func:`msc_core.sources.assign_split`).
    sources : sequence of str
        Named in the error of an empty listing.

    Raises
    ------
    InputError
        The listing is empty, or one file is listed with conflicting labels, groups, genres or splits.
    """
    seen: dict[str, Entry] = {}
    duplicates = 0
    filesystems: dict = {}
    for item in items:
        location = location_of(item.path)
        entry = Entry(item.path, location, "", item.label, item.group, item.genre, item.split)
        if item.label and not item.split:  # a file that is its own group is split by its location
            entry = dataclasses.replace(entry, split=assign_split(entry.group_key, fractions=fractions, seed=seed))
        split = entry.split
        known = seen.get(location)
        if known is not None:
            if (known.label, known.group_key, known.genre, known.split) != (item.label, entry.group_key, item.genre,
                                                                            split):
                raise InputError(
                    f"{item.path} is listed twice with different metadata: "
                    f"label/group/genre/split {known.label}/{known.group}/{known.genre}/{known.split} "
                    f"(as {known.path}) and {item.label}/{item.group}/{item.genre}/{split}")
            duplicates += 1
            continue
        seen[location] = dataclasses.replace(entry, fingerprint=fingerprint_of(item.path, filesystems=filesystems))
    if not seen:
        raise InputError(f"no files listed from {', '.join(map(str, sources)) or 'the sources'}; "
                         "nothing was changed")
    return Listing(list(seen.values()), duplicates)


# ---------------------------------------------------------------------------------------- planning
def chunk_id(entries: Sequence[Entry], settings: str) -> str:
    """Deterministic id of a chunk: 16 hex digits of a hash of its entries (fingerprints included) and settings."""
    digest = hashlib.sha256(settings.encode())
    for entry in entries:
        digest.update(f"{entry.location}\0{entry.fingerprint}\0{entry.key(settings)}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Chunk:
    """A unit of work and of commit: files processed together, their results in the chunk's part files.

    Attributes
    ----------
    id : str
        :func:`chunk_id` of the entries.
    entries : list of Entry
    supersedes : list of str
        Ids of committed chunks that this one replaces (removed in its commit).
    """

    id: str
    entries: list[Entry]
    supersedes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """What a run does, and the counts its summary reports.

    Attributes
    ----------
    chunks : list of Chunk
        To process, in listing order.
    dropped : list of str
        Committed chunks whose files are all gone from the listing: removed in the first commit.
    kept : list of str
        Committed chunks that stay as they are.
    new, changed, deleted, unchanged, repaired : int
        Files never seen, seen with another fingerprint or key, no longer listed,
        kept, and processed again because their chunk's parts were damaged or
        shared with a changed or deleted file.
    """

    chunks: list[Chunk]
    dropped: list[str]
    kept: list[str]
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    repaired: int = 0

    def counts(self) -> dict[str, int]:
        """The counts as a dict (for summaries and manifests)."""
        return {name: getattr(self, name) for name in ("new", "changed", "deleted", "unchanged", "repaired")}


def plan(listing: Listing, records: pa.Table, *, settings: str, files_per_chunk: int,
         damaged: Iterable[str] = ()) -> Plan:
    """Plan a run: which files to process in which chunks, which committed chunks to drop or keep.

    Parameters
    ----------
    listing : Listing
        From :func:`list_entries`.
    records : pyarrow.Table
        Committed records (at least ``location``, ``fingerprint``, ``key``, ``chunk``).
    settings : str
        The job's settings (features, window policy, model...); a change redoes every file.
    files_per_chunk : int
        Most new files per chunk (a superseded chunk's surviving files stay together).
    damaged : iterable of str
        Committed chunks whose part files are missing or damaged.
    """
    committed = {location: (fingerprint, key, chunk) for location, fingerprint, key, chunk in zip(
        *(records[name].to_pylist() for name in ("location", "fingerprint", "key", "chunk")))}
    listed = {entry.location for entry in listing.entries}
    bad = set(damaged)
    new, changed = set(), set()
    for entry in listing.entries:
        known = committed.get(entry.location)
        if known is None:
            new.add(entry.location)
        elif known[0] != entry.fingerprint or known[1] != entry.key(settings):
            changed.add(entry.location)
            bad.add(known[2])
    deleted = {location for location in committed if location not in listed}
    bad.update(committed[location][2] for location in deleted)
    result = Plan(chunks=[], dropped=[], kept=[], new=len(new), changed=len(changed), deleted=len(deleted))
    by_chunk: dict[str, list[Entry]] = {}
    fresh: list[Entry] = []
    for entry in listing.entries:
        known = committed.get(entry.location)
        if known is not None and known[2] in bad:
            by_chunk.setdefault(known[2], []).append(entry)
            result.repaired += entry.location not in changed
        elif known is None:
            fresh.append(entry)
    result.unchanged = len(listing.entries) - len(new) - len(changed) - result.repaired
    all_chunks = dict.fromkeys(chunk for _, _, chunk in committed.values())
    result.dropped = [chunk for chunk in all_chunks if chunk in bad and chunk not in by_chunk]
    result.kept = [chunk for chunk in all_chunks if chunk not in bad]
    for old, entries in by_chunk.items():
        result.chunks.append(Chunk(chunk_id(entries, settings), entries, [old]))
    for start in range(0, len(fresh), files_per_chunk):
        entries = fresh[start:start + files_per_chunk]
        result.chunks.append(Chunk(chunk_id(entries, settings), entries))
    return result


# ---------------------------------------------------------------------------------------- the records table
def delta_options(uri: str) -> dict[str, str] | None:
    """Storage options for ``deltalake`` on ``uri``: plain HTTP allowed when the S3 endpoint is ``http://``."""
    if not is_uri(uri):
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return {"AWS_ALLOW_HTTP": "true"} if endpoint.startswith("http://") else {}


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


class FileRecords:
    """The Delta table ``OUT/_files`` of one job's committed file records.

    Parameters
    ----------
    out : str
        The job's output folder (local path or URI).
    extra_fields : sequence of (str, pyarrow.DataType)
        The job's own columns, after :data:`RECORD_FIELDS`.
    """

    def __init__(self, out: str, *, extra_fields: Sequence[tuple[str, pa.DataType]] = ()):
        self.uri = f"{out.rstrip('/')}/{RECORDS_DIR}"
        self.schema = pa.schema([*RECORD_FIELDS, *extra_fields])
        self.options = delta_options(self.uri)

    def _table(self):
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
            return None
        return DeltaTable(self.uri, storage_options=self.options)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The committed records (empty, with the full schema, before the first commit)."""
        table = self._table()
        if table is None:
            empty = self.schema.empty_table()
            return empty if columns is None else empty.select(list(columns))
        return pa.table(table.to_pyarrow_table(columns=list(columns) if columns else None))

    def version(self) -> int | None:
        """The committed version (None before the first commit)."""
        table = self._table()
        return None if table is None else table.version()

    def commit(self, records: pa.Table, *, replaces: Iterable[str] = ()) -> None:
        """Atomically drop the records of chunks ``replaces`` and add ``records`` (one Delta commit)."""
        from deltalake import write_deltalake

        records = records.cast(self.schema)
        replaces = set(replaces)
        chunks = sorted({*replaces, *records["chunk"].to_pylist()})
        if not chunks:
            return
        if not replaces or self._table() is None:  # only new chunks: a plain append reads nothing
            write_deltalake(self.uri, records, mode="append", storage_options=self.options)
            return
        write_deltalake(self.uri, records, mode="overwrite", predicate=f"chunk IN ({_sql_list(chunks)})",
                        storage_options=self.options)

    def vacuum(self) -> None:
        """Delete the data files of records no snapshot references any more (after a successful run)."""
        table = self._table()
        if table is not None:
            table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)


def records_table(chunk: Chunk, *, settings: str, parts: Sequence[tuple[str, int]],
                  extra: Mapping[str, Sequence[Any]] | None = None) -> pa.Table:
    """The records of one processed chunk: :data:`RECORD_FIELDS` plus the job's ``extra`` columns."""
    count = len(chunk.entries)
    columns: dict[str, Any] = {
        "location": [entry.location for entry in chunk.entries], "path": [entry.path for entry in chunk.entries],
        "fingerprint": [entry.fingerprint for entry in chunk.entries],
        "key": [entry.key(settings) for entry in chunk.entries], "chunk": [chunk.id] * count,
        "parts": [json.dumps([list(part) for part in parts])] * count,
    }
    columns.update(extra or {})
    return pa.table(columns)


def damaged_chunks(records: pa.Table, sizes: Mapping[str, int]) -> set[str]:
    """Committed chunks with a part file that is missing or of another size than committed.

    Parameters
    ----------
    records : pyarrow.Table
        With ``chunk`` and ``parts``.
    sizes : mapping of str to int
        Part file name -> bytes, as found on storage.
    """
    damaged = set()
    for chunk, parts in set(zip(records["chunk"].to_pylist(), records["parts"].to_pylist())):
        if any(sizes.get(name) != size for name, size in json.loads(parts)):
            damaged.add(chunk)
    return damaged


def committed_parts(records: pa.Table) -> set[str]:
    """Names of every part file the committed records reference."""
    return {name for parts in set(records["parts"].to_pylist()) for name, _ in json.loads(parts)}


_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f]")


def clean_message(text: str) -> str:
    """``text`` without terminal escape sequences (colours, titles) and control characters, for stored messages."""
    return _ESCAPES.sub("", text)


class Committer:
    """Collects the records of finished chunks and commits them in batches (see :class:`FileRecords`).

    A batch is committed once it holds ``every_chunks`` chunks or is
    ``every_s`` seconds old, and by :meth:`flush`; a killed run thus loses at
    most one batch of work.

    Parameters
    ----------
    records : FileRecords
    every_chunks : int
    every_s : float
    """

    def __init__(self, records: FileRecords, *, every_chunks: int = 16, every_s: float = 10.0):
        self.records, self.every_chunks, self.every_s = records, every_chunks, every_s
        self.pending: list[pa.Table] = []
        self.replaces: list[str] = []
        self.commits = 0
        self._since = time.monotonic()

    def add(self, table: pa.Table, *, replaces: Iterable[str] = ()) -> None:
        """Queue one chunk's records (and the committed chunks they supersede); commit when the batch is due."""
        if not self.pending:
            self._since = time.monotonic()
        self.pending.append(table)
        self.replaces.extend(replaces)
        if len(self.pending) >= self.every_chunks or time.monotonic() - self._since >= self.every_s:
            self.flush()

    def drop(self, chunks: Iterable[str]) -> None:
        """Commit the removal of ``chunks`` (with whatever is queued)."""
        self.replaces.extend(chunks)
        self.flush()

    def flush(self) -> None:
        """Commit what is queued, in one transaction."""
        if not self.pending and not self.replaces:
            return
        table = pa.concat_tables([t.cast(self.records.schema) for t in self.pending]) if self.pending \
            else self.records.schema.empty_table()
        self.records.commit(table, replaces=self.replaces)
        self.pending, self.replaces = [], []
        self.commits += 1


# ---------------------------------------------------------------------------------------- the per-file step
@dataclass(frozen=True)
class FileResult:
    """One file decoded, cut into windows and featurized, or the error that stopped it.

    Attributes
    ----------
    path : str
    features : FileFeatures or None
        The windows and codes (:func:`msc_core.labelling.featurize_file`), or one piece of the
        file's windows and audio (:func:`process_file_pieces`); None on error.
    stage : str or None
        ``"decode"`` (the audio could not be read, or its child process overran) or ``"featurize"``.
    error_type, message : str or None
        The exception's type name and message, without terminal escape codes.
    """

    path: str
    features: Any = None
    stage: str | None = None
    error_type: str | None = None
    message: str | None = None


def process_file(path: str, config, *, limits, child=None) -> FileResult:
    """The one per-file step of every job: decode -> windows -> codes, or an error with its stage.

    Any exception is caught (one bad file never stops a chunk), except a full
    disk (``ENOSPC``), which stops the job.

    Parameters
    ----------
    path : str
        Local path or URI.
    config : FeatureConfig
    limits : DecodeLimits
    child : ChildProcess or None
        As in :func:`msc_core.labelling.featurize_file`.
    """
    from .labelling import featurize_file

    try:
        return FileResult(path, featurize_file(path, config, limits=limits, child=child))
    except Exception as error:  # noqa: BLE001 - recorded as the file's outcome
        return _failed(path, error)


def process_file_pieces(path: str, config, *, windows: int, limits, child=None) -> Iterator[FileResult]:
    """:func:`process_file` for labelling: the file's windows and audio in pieces, as it is decoded.

    Yields a :class:`FileResult` per piece (:func:`msc_core.labelling.iter_pieces`, lazy
    features: the model's stage featurizes the windows it reads), and on an error a last one
    with the error, after whatever pieces came before it. Errors as in :func:`process_file`.
    """
    from .labelling import iter_pieces

    try:
        for piece in iter_pieces(path, config, windows=windows, limits=limits, child=child):
            yield FileResult(path, piece)
    except Exception as error:  # noqa: BLE001 - recorded as the file's outcome
        yield _failed(path, error)


def _failed(path: str, error: Exception) -> FileResult:
    """The outcome of a file that raised ``error``; a full disk is raised again, to stop the job."""
    from .errors import AudioDecodeError

    if is_disk_full(error):
        raise error
    stage = "decode" if isinstance(error, AudioDecodeError) else "featurize"
    return FileResult(path, None, stage, type(error).__name__, clean_message(str(error)))


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) says the device has no space left (``ENOSPC``)."""
    import errno

    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


# ---------------------------------------------------------------------------------------- a run
class Run:
    """One job run over an output folder: plan against the snapshot, commit per batch, clean up at the end.

    Creating it reads the committed records, checks the committed part files
    (missing or of another size, and with ``verify`` any that fails to read in
    full with its page checksums: their chunks are redone), plans, and commits
    the removal of chunks whose files are all gone. Nothing else changes
    until :meth:`done` commits finished chunks.

    Parameters
    ----------
    out : str
        The job's output folder (local path or URI).
    listing : Listing
    settings : str
        The job's settings (a change redoes every file).
    files_per_chunk : int
    part_folders : sequence of str
        Folders under ``out`` that hold only part files (uncommitted ones are deleted by :meth:`finish`).
    extra_fields : sequence of (str, pyarrow.DataType)
        The job's own record columns.
    every_chunks, every_s
        Commit cadence (:class:`Committer`).
    verify : bool
        Read every committed part file in full (a flipped bit keeps a file's size).
    """

    def __init__(self, out: str, *, listing: Listing, settings: str, files_per_chunk: int,
                 part_folders: Sequence[str], extra_fields: Sequence[tuple[str, pa.DataType]] = (),
                 every_chunks: int = 8, every_s: float = 10.0, verify: bool = False):
        from .shards import parquet_problem
        from .storage import file_sizes, make_dirs

        self.out, self.listing, self.settings, self.part_folders = out.rstrip("/"), listing, settings, part_folders
        make_dirs([f"{self.out}/{folder}" for folder in part_folders])
        self.records = FileRecords(out, extra_fields=extra_fields)
        committed = self.records.read()
        sizes = {f"{folder}/{name}": size for folder in part_folders
                 for name, size in file_sizes(f"{self.out}/{folder}").items()}
        if verify:
            for name in sorted(committed_parts(committed) & sizes.keys()):
                if parquet_problem(f"{self.out}/{name}") is not None:
                    sizes[name] = -1   # counted as damaged below
        self.damaged = damaged_chunks(committed, sizes)
        self.plan = plan(listing, committed, settings=settings, files_per_chunk=files_per_chunk, damaged=self.damaged)
        self.committer = Committer(self.records, every_chunks=every_chunks, every_s=every_s)
        if self.plan.dropped:
            self.committer.drop(self.plan.dropped)

    def done(self, chunk: Chunk, *, parts: Sequence[tuple[str, int]], extra: Mapping[str, Sequence[Any]] | None = None
             ) -> None:
        """Queue a processed chunk's records for the next commit."""
        self.committer.add(records_table(chunk, settings=self.settings, parts=parts, extra=extra),
                           replaces=chunk.supersedes)

    def finish(self) -> pa.Table:
        """Commit what is queued, delete part files no record references, vacuum; returns the committed records."""
        from .storage import delete_files, file_sizes

        self.committer.flush()
        records = self.records.read()
        keep = committed_parts(records)
        for folder in self.part_folders:
            delete_files(f"{self.out}/{folder}", [name for name in file_sizes(f"{self.out}/{folder}")
                                                  if f"{folder}/{name}" not in keep])
        self.records.vacuum()
        return records

    def order(self, records: pa.Table) -> list[str]:
        """Committed chunk ids in the order of the listing (for outputs that follow it)."""
        position = {entry.location: index for index, entry in enumerate(self.listing.entries)}
        first: dict[str, int] = {}
        for location, chunk in zip(records["location"].to_pylist(), records["chunk"].to_pylist()):
            first[chunk] = min(first.get(chunk, len(position)), position.get(location, len(position)))
        return sorted(first, key=lambda chunk: (first[chunk], chunk))
