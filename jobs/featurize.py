"""``msc featurize SRC... --out DIR``: an audio archive to depth-layer shards, fanned out on Ray.

Also ``python -m jobs.featurize SRC... --out DIR`` (for ``ray job submit``).

How it runs
-----------
The driver streams the listing (:func:`msc_core.sources.iter_items`), cuts it
into chunks of ``--files-per-task`` files and keeps at most two tasks per
cluster CPU in flight (``ray.wait``). Each task decodes its files window by
window, featurizes batches of windows and writes its own shards
``DIR/shards/part-<chunk>-<n>.parquet`` (each at most ``--shard-mb`` of codes)
with :func:`msc_core.shards.write_atomic`, then a small completion record
``DIR/_chunks/<chunk>.json`` with its counts, errors and truncated files.
Only those small records travel back to the driver. Each file is decoded and
featurized in a supervised child process of the worker
(:mod:`msc_core.isolation`), killed when the file takes longer than
``--file-timeout``, so that a decoder hung inside one call costs one error row,
not the job.

A chunk's id hashes its files (with labels, groups and splits), the full
feature config including the window policy, and ``--max-windows``, so rerunning the same command
recreates the same ids: chunks with a completion record are skipped, leftovers
of unfinished chunks and ``*.tmp-*`` files are removed and redone, and shards of
chunks that the command no longer lists are deleted at the end. The finished
dataset holds each window exactly once. Files that failed to decode stay
failed in their chunk's record (a rerun does not retry them); chunks whose
task died (worker crash, unwritable output) have no record and are redone.

Outputs
-------
``DIR/shards/*.parquet``
    One row per window (schema: :mod:`msc_core.shards`).
``DIR/errors.parquet``
    One row per failed file: path, stage (decode, featurize, task), error_type, message.
    A failed file contributes no rows.
``DIR/truncated.parquet``
    One row per file cut by ``--max-windows``: path, windows (taken), truncated_at_s
    (end of the last window taken, s), duration_s (the file's, s). Its windows are in the shards.
``DIR/manifest.json``
    Config, inputs, counts of files and windows per class and split, errors,
    versions and timings; written last, so its presence means the job finished.

Exit code: 0 when every file was featurized, 1 when some failed (see
``errors.parquet``), 2 for usage errors (bad arguments, missing sources,
malformed manifests).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Iterable, Iterator, Sequence

from jobs.options import add_limit_arguments, add_window_arguments, decode_limits, window_config
from jobs.raylib import add_ray_arguments

DEFAULT_SHARD_MB = 64.0
DEFAULT_FILES_PER_TASK = 256
TASKS_PER_CPU = 2
TASK_RETRIES = 3  # a task lost with its worker or node is run again (it rewrites the same shard names)
PROGRESS_EVERY_S = 2.0
CHUNKS_DIR = "_chunks"
SHARDS_DIR = "shards"
ERROR_SCHEMA = (("path", "string"), ("stage", "string"), ("error_type", "string"), ("message", "string"))
TRUNCATED_SCHEMA = (("path", "string"), ("windows", "int32"), ("truncated_at_s", "double"), ("duration_s", "double"))

Row = tuple[str, str | None, str, str | None, str | None]
"""One listed file as sent to a task: (path, label, group, genre, split)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc featurize``."""
    from msc_core.sources import LAYOUTS

    parser = subparsers.add_parser(
        "featurize", help="featurize an audio archive into Parquet shards on Ray",
        description="List SRC (folders, globs, file lists, manifests, s3:// or gs:// URIs), label files by dataset "
                    "layout, split them by group, and write one row per window to DIR/shards/*.parquet with "
                    "DIR/errors.parquet and DIR/manifest.json. Rerunning the same command resumes. Exit code: "
                    "0 all files done, 1 some files failed (see errors.parquet), 2 usage error.")
    parser.add_argument("sources", nargs="+", metavar="SRC", help="folder, glob, file list (.txt), manifest "
                        "(.csv/.parquet with path,label[,group][,genre]), audio file or fsspec URI")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local or URI)")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="how paths give labels and groups (default: detect per file)")
    parser.add_argument("--allow-outside", action="store_true",
                        help="let manifests name files outside their own folder")
    add_window_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument("--split", default="70/15/15", metavar="TRAIN/VAL/TEST",
                        help="split fractions by group (default 70/15/15)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB, metavar="M",
                        help=f"most megabytes of codes per shard (default {DEFAULT_SHARD_MB:g})")
    parser.add_argument("--files-per-task", type=int, default=DEFAULT_FILES_PER_TASK, metavar="K",
                        help=f"files per Ray task (default {DEFAULT_FILES_PER_TASK})")
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``msc featurize`` from parsed arguments; returns the exit code (0 ok, 1 some files failed)."""
    from msc_core.errors import InputError
    from msc_core.sources import parse_split
    from msc_core.storage import require_output_dir

    from jobs import console
    from jobs.raylib import init_ray

    if args.files_per_task < 1 or args.shard_mb <= 0:
        raise InputError("--files-per-task and --shard-mb must be positive")
    require_output_dir(args.out)
    config = window_config(args)
    limits = decode_limits(args)
    fractions = parse_split(args.split)
    init_ray(args.address, num_cpus=args.num_cpus)
    manifest = featurize_archive(args.sources, out=args.out, config=config, layout=args.layout,
                                 fractions=fractions, seed=args.seed, shard_mb=args.shard_mb,
                                 files_per_task=args.files_per_task, allow_outside=args.allow_outside,
                                 limits=limits, isolate=not args.no_isolation, progress=console.level() > console.QUIET)
    console.summary(summary_line(manifest))
    return 1 if manifest["errors"] else 0


# ---------------------------------------------------------------------------- the task

def featurize_chunk(rows: Sequence[Row], *, chunk_id: str, out: str, config_json: str, shard_bytes: int,
                    limits=None, isolate: bool = True) -> dict[str, Any]:
    """Featurize one chunk of files and write its shards and completion record (runs in a Ray task).

    Parameters
    ----------
    rows : sequence of (path, label, group, genre, split)
    chunk_id : str
        Names the shards ``part-<chunk_id>-<n>.parquet`` and the record ``<chunk_id>.json``.
    out : str
        Output folder (local path or URI).
    config_json : str
        ``FeatureConfig.to_json()`` (window policy included).
    shard_bytes : int
        Most bytes of codes per shard; a file's windows are never split across shards.
    limits : DecodeLimits or None
        Bounds on each file (default: ``DecodeLimits()``).
    isolate : bool
        Decode in this worker's supervised child process, killed when a file
        overruns ``limits.max_decode_s`` (else in this process).

    Returns
    -------
    dict
        The completion record: ``chunk``, ``files`` and ``windows`` counted per
        ``"<label>/<split>"``, ``errors`` (list of dicts with :data:`ERROR_SCHEMA`),
        ``truncated`` (list of dicts with :data:`TRUNCATED_SCHEMA`), ``shards`` (file names), ``seconds`` (wall time of the task), ``peak_rss_mb``
        (peak resident memory of the worker process so far).
    """
    from msc_core.audio import DecodeLimits
    from msc_core.config import FeatureConfig
    from msc_core.errors import AudioDecodeError
    from msc_core.isolation import shared_child
    from msc_core.labelling import featurize_file, warm_up

    started = time.monotonic()
    config = FeatureConfig.from_json(config_json)
    child = shared_child(warm_up=warm_up) if isolate else None
    writer = _ShardWriter(out=out, chunk_id=chunk_id, config=config, shard_bytes=shard_bytes)
    files, windows, errors, truncated = Counter(), Counter(), [], []
    for row in rows:
        path = row[0]
        try:
            features = featurize_file(path, config, limits=limits or DecodeLimits(), child=child)
        except Exception as error:  # one bad file must never stop the chunk
            errors.append({"path": path, "stage": "decode" if isinstance(error, AudioDecodeError) else "featurize",
                           "error_type": type(error).__name__, "message": str(error)})
            continue
        writer.add(_shard_columns(row, features), features.codes)
        key = f"{row[1] or 'unlabelled'}/{row[4] or 'none'}"
        files[key] += 1
        windows[key] += len(features.codes)
        if features.truncated_at_s is not None:
            truncated.append({"path": path, "windows": len(features.codes),
                              "truncated_at_s": features.truncated_at_s, "duration_s": features.duration_s})
    writer.close()
    record = {"chunk": chunk_id, "files": dict(files), "windows": dict(windows), "errors": errors,
              "truncated": truncated, "shards": writer.written, "seconds": time.monotonic() - started, "peak_rss_mb": _peak_rss_mb()}
    _write_bytes_atomic(f"{out}/{CHUNKS_DIR}/{chunk_id}.json", json.dumps(record).encode())
    return record


def _shard_columns(row: Row, features) -> dict[str, list]:
    """The shard columns (all but ``codes``) of one file's windows.

    A file's windows are held until it has decoded completely, so that a file
    failing halfway leaves no rows: with the shard buffer, a worker holds at most
    ``--shard-mb`` plus one file's codes (27.5 KB per window, at most
    ``--max-windows`` windows).
    """
    path, label, group, genre, split = row
    count = len(features.start_s)
    return {"path": [path] * count, "label": [label] * count, "group": [group] * count,
            "genre": [genre] * count, "split": [split] * count, "window": list(range(count)),
            "start_s": features.start_s.tolist(), "duration_s": (features.end_s - features.start_s).tolist(),
            "sample_rate": [features.sample_rate] * count, "channels": [features.channels] * count}


@dataclass
class _ShardWriter:
    """Collects whole files' windows and writes a shard whenever ``shard_bytes`` of codes are pending."""

    out: str
    chunk_id: str
    config: Any
    shard_bytes: int
    written: list[str] = field(default_factory=list)
    _columns: list[dict[str, list]] = field(default_factory=list)
    _codes: list[Any] = field(default_factory=list)
    _bytes: int = 0

    def add(self, columns: dict[str, list], codes) -> None:
        if self._bytes and self._bytes + codes.nbytes > self.shard_bytes:
            self._flush()
        self._columns.append(columns)
        self._codes.append(codes)
        self._bytes += codes.nbytes

    def close(self) -> None:
        if self._codes:
            self._flush()

    def _flush(self) -> None:
        import numpy as np

        from msc_core.shards import windows_table, write_atomic

        merged = {name: list(itertools.chain.from_iterable(part[name] for part in self._columns))
                  for name in self._columns[0]}
        table = windows_table(self.config, codes=np.concatenate(self._codes), columns=merged)
        name = f"part-{self.chunk_id}-{len(self.written):03d}.parquet"
        write_atomic(table, f"{self.out}/{SHARDS_DIR}/{name}")
        self.written.append(name)
        self._columns, self._codes, self._bytes = [], [], 0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


# ---------------------------------------------------------------------------- the driver

def chunk_id_of(rows: Sequence[Row], config_json: str, *, max_windows: int) -> str:
    """Deterministic id of a chunk: 16 hex digits of a hash of its sorted rows, the full config and ``max_windows``."""
    from msc_core.audio import DecodeLimits

    digest = hashlib.sha256(config_json.encode())
    if max_windows != DecodeLimits().max_windows:  # the default leaves the ids of earlier msc versions as they were
        digest.update(f"max_windows={max_windows}\n".encode())
    for row in sorted(rows, key=lambda r: tuple(value or "" for value in r)):
        digest.update("\t".join(value or "" for value in row).encode() + b"\n")
    return digest.hexdigest()[:16]


def iter_chunks(sources: Sequence[str], *, layout: str, fractions: Sequence[float], seed: int,
                files_per_task: int, allow_outside: bool) -> Iterator[list[Row]]:
    """The listing, labelled and split, in chunks of ``files_per_task`` rows (streamed)."""
    from msc_core.sources import assign_split, iter_items

    chunk: list[Row] = []
    for item in iter_items(sources, layout=layout, allow_outside=allow_outside):
        split = item.split or (assign_split(item.group, fractions=fractions, seed=seed) if item.label else None)
        chunk.append((item.path, item.label, item.group, item.genre, split))
        if len(chunk) == files_per_task:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Totals:
    """What the driver adds up from completion records, and prints as progress."""

    started: float = field(default_factory=time.monotonic)
    files: Counter = field(default_factory=Counter)
    windows: Counter = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    listed: int = 0
    listing_done: bool = False
    chunks: int = 0
    chunks_reused: int = 0
    new_windows: int = 0
    shards: int = 0
    task_seconds: float = 0.0
    worker_peak_rss_mb: float = 0.0
    _last_print: float = 0.0

    @property
    def done_files(self) -> int:
        return sum(self.files.values()) + len(self.errors)

    def add(self, record: dict[str, Any], *, reused: bool) -> None:
        self.files.update(record["files"])
        self.windows.update(record["windows"])
        self.errors.extend(record["errors"])
        self.truncated.extend(record.get("truncated", []))  # absent from records of msc before truncation reports
        self.shards += len(record["shards"])
        self.chunks += 1
        self.chunks_reused += reused
        if not reused:
            self.task_seconds += record["seconds"]
            self.worker_peak_rss_mb = max(self.worker_peak_rss_mb, record["peak_rss_mb"])
            self.new_windows += sum(record["windows"].values())

    def progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < PROGRESS_EVERY_S:
            return
        self._last_print = now
        elapsed = max(now - self.started, 1e-9)
        done = self.done_files
        rate = done / elapsed
        if self.listing_done and rate > 0:
            eta = time.strftime("%H:%M:%S", time.gmtime((self.listed - done) / rate))
        else:
            eta = "after listing"
        total = str(self.listed) if self.listing_done else f"{self.listed}+ listed"
        print(f"featurize: {done}/{total} files, {sum(self.windows.values())} windows, {len(self.errors)} errors, "
              f"{self.new_windows / elapsed:.1f} windows/s, {rate:.1f} files/s, ETA {eta}",
              file=sys.stderr, flush=True)


def featurize_archive(sources: Sequence[str], *, out: str, config, layout: str = "auto",
                      fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                      shard_mb: float = DEFAULT_SHARD_MB, files_per_task: int = DEFAULT_FILES_PER_TASK,
                      allow_outside: bool = False, limits=None, isolate: bool = True,
                      progress: bool = True) -> dict[str, Any]:
    """Featurize ``sources`` into ``out`` on the connected Ray cluster (resuming earlier runs).

    Parameters
    ----------
    sources : sequence of str
        See :func:`msc_core.sources.iter_items`.
    out : str
        Output folder (local path or URI).
    config : FeatureConfig
        Features and window policy.
    layout, allow_outside
        See :func:`msc_core.sources.iter_items`.
    fractions : (train, val, test)
    seed : int
        Split seed.
    shard_mb : float
        Most megabytes of codes per shard.
    files_per_task : int
    limits : DecodeLimits or None
        Bounds on each file (default: ``DecodeLimits()``).
    isolate : bool
        Decode in supervised child processes that enforce ``limits.max_decode_s`` (see :func:`featurize_chunk`).
    progress : bool
        Print progress lines to stderr.

    Returns
    -------
    dict
        The manifest written to ``out/manifest.json``.
    """
    import ray

    from jobs.raylib import cluster_cpus

    from msc_core.sources import is_uri

    from msc_core.audio import DecodeLimits

    out = out.rstrip("/") if is_uri(out) else os.path.abspath(out)
    limits = limits or DecodeLimits()
    config_json = config.to_json()
    _make_dirs(out)
    done, leftovers = _scan_output(out)
    _delete(leftovers)
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(featurize_chunk)
    max_in_flight = TASKS_PER_CPU * cluster_cpus()
    shard_bytes = int(shard_mb * 2 ** 20)
    totals = _Totals()
    wanted: set[str] = set()
    in_flight: dict[Any, list[Row]] = {}

    def collect(refs: Iterable) -> None:
        for ref in refs:
            rows = in_flight.pop(ref)
            try:
                totals.add(ray.get(ref), reused=False)
            except (ray.exceptions.RayError, OSError) as error:
                totals.add(_failed_task_record(rows, error), reused=False)
            if progress:
                totals.progress()

    for rows in iter_chunks(sources, layout=layout, fractions=fractions, seed=seed,
                            files_per_task=files_per_task, allow_outside=allow_outside):
        chunk_id = chunk_id_of(rows, config_json, max_windows=limits.max_windows)
        totals.listed += len(rows)
        if chunk_id in wanted:
            continue  # the same files listed twice in a row of sources
        wanted.add(chunk_id)
        if chunk_id in done:
            totals.add(_read_json(done[chunk_id]), reused=True)
            continue
        while len(in_flight) >= max_in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            collect(ready)
        ref = task.remote(rows, chunk_id=chunk_id, out=out, config_json=config_json, shard_bytes=shard_bytes,
                          limits=limits, isolate=isolate)
        in_flight[ref] = rows
    totals.listing_done = True
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        collect(ready)
    _delete(_stale_outputs(out, wanted))
    manifest = _manifest(totals, sources=sources, out=out, config=config, layout=layout, fractions=fractions,
                         seed=seed, shard_mb=shard_mb, files_per_task=files_per_task, allow_outside=allow_outside,
                         limits=limits, isolate=isolate)
    _write_records(totals.errors, f"{out}/errors.parquet", ERROR_SCHEMA)
    _write_records(totals.truncated, f"{out}/truncated.parquet", TRUNCATED_SCHEMA)
    _write_bytes_atomic(f"{out}/manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    if progress:
        totals.progress(force=True)
    return manifest


def _failed_task_record(rows: Sequence[Row], error: Exception) -> dict[str, Any]:
    """A completion record for a task that died (worker crash, unwritable output): every file failed."""
    message = f"task of the chunk failed: {error}".splitlines()[0]
    return {"files": {}, "windows": {}, "shards": [], "truncated": [], "seconds": 0.0, "peak_rss_mb": 0.0, "errors": [
        {"path": row[0], "stage": "task", "error_type": type(error).__name__, "message": message} for row in rows]}


def _list_files(folder: str) -> list[str]:
    """Full paths (local, or URIs) of the files directly in ``folder``; empty when it does not exist."""
    import pyarrow.fs as pafs

    from msc_core.shards import resolve_filesystem

    filesystem, inner = resolve_filesystem(folder)
    prefix = folder[:len(folder) - len(inner)] if folder.endswith(inner) else ""
    selector = pafs.FileSelector(inner, allow_not_found=True)
    return [prefix + info.path for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File]


def _chunk_of(name: str) -> str | None:
    """Chunk id of ``part-<chunk>-<n>.parquet`` or ``<chunk>.json``; None for anything else."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("part-") and base.endswith(".parquet"):
        return base[len("part-"):].split("-", 1)[0]
    if base.endswith(".json"):
        return base[:-len(".json")]
    return None


def _scan_output(out: str) -> tuple[dict[str, str], list[str]]:
    """Completion records of finished chunks (id -> record path), and files to delete before resuming.

    To delete: ``*.tmp-*`` files, and shards of chunks without a completion record.
    """
    record_files = _list_files(f"{out}/{CHUNKS_DIR}")
    records = {_chunk_of(path): path for path in record_files if ".tmp-" not in path}
    records.pop(None, None)
    leftovers = [path for path in record_files if ".tmp-" in path]
    for path in _list_files(f"{out}/{SHARDS_DIR}"):
        if ".tmp-" in path or _chunk_of(path) not in records:
            leftovers.append(path)
    return records, leftovers


def _stale_outputs(out: str, wanted: set[str]) -> list[str]:
    """Shards and records of chunks that this run did not list (earlier runs with other inputs)."""
    return [path for folder in (f"{out}/{SHARDS_DIR}", f"{out}/{CHUNKS_DIR}") for path in _list_files(folder)
            if _chunk_of(path) not in wanted]


def _make_dirs(out: str) -> None:
    from msc_core.shards import resolve_filesystem

    filesystem, inner = resolve_filesystem(out)
    for folder in (SHARDS_DIR, CHUNKS_DIR):
        filesystem.create_dir(f"{inner}/{folder}", recursive=True)


def _delete(paths: Iterable[str]) -> None:
    from msc_core.shards import resolve_filesystem

    for path in paths:
        filesystem, inner = resolve_filesystem(path)
        filesystem.delete_file(inner)


def _read_json(path: str) -> dict[str, Any]:
    from msc_core.shards import resolve_filesystem

    filesystem, inner = resolve_filesystem(path)
    with filesystem.open_input_stream(inner) as handle:
        return json.loads(handle.read())


def _write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`msc_core.shards.atomic_output`."""
    from msc_core.shards import atomic_output

    with atomic_output(path) as sink:
        sink.write(data)


def _write_records(records: list[dict[str, Any]], path: str, fields: Sequence[tuple[str, str]]) -> None:
    """``records`` as a Parquet table of ``fields`` ((name, Arrow type name) pairs), written atomically."""
    import pyarrow as pa

    from msc_core.shards import write_atomic

    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in fields])
    write_atomic(pa.Table.from_pylist(records, schema=schema), path)


def _nested(counter: Counter) -> dict[str, dict[str, int]]:
    """``{"music/train": 3}`` -> ``{"music": {"train": 3}}``."""
    nested: dict[str, dict[str, int]] = {}
    for key, count in sorted(counter.items()):
        label, split = key.split("/")
        nested.setdefault(label, {})[split] = count
    return nested


def _versions() -> dict[str, str]:
    import ray

    from msc_core.config import msc_version

    versions = {"msc": msc_version(), "ray": ray.__version__, "python": platform.python_version()}
    for package in ("tensorflow-cpu", "tensorflow", "numpy", "librosa", "soxr", "soundfile", "pyarrow"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _manifest(totals: _Totals, *, sources, out, config, layout, fractions, seed, shard_mb, files_per_task,
              allow_outside, limits, isolate) -> dict[str, Any]:
    elapsed = time.monotonic() - totals.started
    windows = sum(totals.windows.values())
    return {
        "config": json.loads(config.to_json()),
        "feature_hash": config.hash,
        "inputs": {"sources": list(sources), "out": out, "layout": layout, "allow_outside": allow_outside,
                   "split": list(fractions), "seed": seed, "shard_mb": shard_mb, "files_per_task": files_per_task,
                   "file_timeout_s": limits.max_decode_s, "max_windows": limits.max_windows, "isolate": isolate},
        "counts": {"files": _nested(totals.files), "windows": _nested(totals.windows)},
        "files": sum(totals.files.values()),
        "windows": windows,
        "errors": len(totals.errors),
        "truncated": len(totals.truncated),
        "listed": totals.listed,
        "chunks": totals.chunks,
        "chunks_reused": totals.chunks_reused,
        "shards": totals.shards,
        "versions": _versions(),
        "timings": {"seconds": elapsed, "windows_per_s": totals.new_windows / max(elapsed, 1e-9),
                    "task_seconds": totals.task_seconds},
        "memory": {"worker_peak_rss_mb": totals.worker_peak_rss_mb, "driver_peak_rss_mb": _peak_rss_mb()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def summary_line(manifest: dict[str, Any]) -> str:
    """One line for the console: files, windows, errors, shards, time and where things are."""
    timings = manifest["timings"]
    truncated = f", {manifest['truncated']} truncated (see truncated.parquet)" if manifest.get("truncated") else ""
    return (f"featurize done: {manifest['files']} files, {manifest['windows']} windows, {manifest['errors']} errors"
            f"{truncated}, "
            f"{manifest['shards']} shards ({manifest['chunks_reused']}/{manifest['chunks']} chunks reused) in "
            f"{timings['seconds']:.1f} s ({timings['windows_per_s']:.1f} windows/s) -> {manifest['inputs']['out']}")


# ---------------------------------------------------------------------------- readers

def read_shards_ray(source: str | Sequence[str]):
    """A Ray Dataset over shards: a featurize output folder, a folder of shards, or shard paths.

    Columns as in :func:`msc_core.shards.shard_schema`; decode ``codes`` with
    :func:`msc_core.shards.codes_from_arrow` inside ``map_batches(batch_format="pyarrow")``.
    """
    import ray

    from msc_core.shards import list_shards

    return ray.data.read_parquet(list_shards(source))


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["featurize", *sys.argv[1:]]))
