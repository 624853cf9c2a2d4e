"""``msc featurize SRC... --out DIR``: an audio archive to depth-layer shards, fanned out on Ray.

Also ``python -m jobs.featurize SRC... --out DIR`` (for ``ray job submit``).

How it runs
-----------
The job runs on the engine of :mod:`msc_core.engine`. Every run lists its
sources again (:func:`msc_core.sources.iter_items`), fingerprints and
deduplicates the files, and plans against the last committed snapshot: new
files, changed files (size and mtime; ETag and version on object stores;
labels, groups, splits; the feature config and ``--max-windows``) and files
whose shards are missing or damaged are featurized; files no longer listed
leave the snapshot. An empty listing is a usage error that changes nothing.

The driver keeps at most two tasks per cluster CPU in flight (``ray.wait``).
Each task (:func:`featurize_chunk`) runs the one per-file step
(:func:`msc_core.engine.process_file`) on each file of its chunk, in a
supervised child process of the worker (:mod:`msc_core.isolation`) killed when
a file takes longer than ``--file-timeout``, and writes its own shards
``DIR/shards/part-<chunk>-<n>.parquet`` (each at most ``--shard-mb`` of codes,
page checksums on). Only the small per-file results travel back; the driver
commits them per batch of chunks to the Delta table ``DIR/_files``, so a
killed run keeps every committed batch. Shards no committed record names
(superseded, or written after the last commit of a killed run) are deleted
only after the run's last commit. A full disk stops the job with one "no
space left on device" error (exit code 2), the snapshot intact.

Outputs
-------
``DIR/shards/*.parquet``
    One row per window (schema: :mod:`msc_core.shards`). After a finished run
    the folder holds exactly the committed snapshot; during a run, or after a
    killed one, read it through :func:`msc_core.shards.list_shards` (what
    ``msc train`` and ``msc evaluate`` do), which lists only committed shards.
``DIR/_files``
    Delta Lake table of file records, one per listed file: location,
    fingerprint, chunk and its shards with their sizes, label, split, status,
    error, windows; its last version is the snapshot.
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
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Iterable, Sequence

from jobs.options import add_limit_arguments, add_window_arguments, decode_limits, window_config
from jobs.raylib import add_ray_arguments

DEFAULT_SHARD_MB = 64.0
DEFAULT_FILES_PER_TASK = 256
TASKS_PER_CPU = 2
TASK_RETRIES = 3  # a task lost with its worker or node is run again (it rewrites the same shard names)
PROGRESS_EVERY_S = 2.0
SHARDS_DIR = "shards"
ERROR_SCHEMA = (("path", "string"), ("stage", "string"), ("error_type", "string"), ("message", "string"))
TRUNCATED_SCHEMA = (("path", "string"), ("windows", "int32"), ("truncated_at_s", "double"), ("duration_s", "double"))
RECORD_FIELDS = (("label", "string"), ("group", "string"), ("genre", "string"), ("split", "string"),
                 ("status", "string"), ("stage", "string"), ("error_type", "string"), ("message", "string"),
                 ("windows", "int32"), ("duration_s", "double"), ("truncated_at_s", "double"))
"""featurize's own columns of its file records (after :data:`msc_core.engine.RECORD_FIELDS`)."""

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
    parser.add_argument("--verify", action="store_true",
                        help="read every committed shard in full with its page checksums and featurize again the "
                             "files of any that fails (a plain rerun checks each shard's size: a flipped bit keeps it)")
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
                                 limits=limits, isolate=not args.no_isolation, progress=console.level() > console.QUIET,
                                 verify=args.verify)
    console.summary(summary_line(manifest))
    return 1 if manifest["errors"] else 0


# ---------------------------------------------------------------------------- the task

def featurize_chunk(chunk, *, out: str, config_json: str, shard_bytes: int, limits=None,
                    isolate: bool = True) -> dict[str, Any]:
    """Featurize one chunk of files and write its shards (runs in a Ray task).

    Parameters
    ----------
    chunk : msc_core.engine.Chunk
        Names the shards ``part-<chunk.id>-<n>.parquet``.
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
        ``parts`` (``[name, bytes]`` of each shard, relative to ``out``),
        ``files`` (the record columns of :data:`RECORD_FIELDS`, one value per
        file), ``seconds`` (wall time of the task), ``peak_rss_mb`` (peak
        resident memory of the worker process so far).
    """
    from msc_core.audio import DecodeLimits
    from msc_core.config import FeatureConfig
    from msc_core.engine import process_file
    from msc_core.isolation import shared_child
    from msc_core.labelling import warm_up
    from msc_core.shards import ShardWriter

    started = time.monotonic()
    config = FeatureConfig.from_json(config_json)
    child = shared_child(warm_up=warm_up) if isolate else None
    writer = ShardWriter(f"{out}/{SHARDS_DIR}", prefix=f"part-{chunk.id}", config=config, shard_bytes=shard_bytes)
    files: dict[str, list] = {name: [] for name, _ in RECORD_FIELDS}
    for entry in chunk.entries:
        result = process_file(entry.path, config, limits=limits or DecodeLimits(), child=child)
        features = result.features
        if features is not None:
            writer.add(_shard_columns(entry, features), features.codes)
        values = {"label": entry.label, "group": entry.group, "genre": entry.genre, "split": entry.split,
                  "status": "ok" if features is not None else "error", "stage": result.stage,
                  "error_type": result.error_type, "message": result.message,
                  "windows": 0 if features is None else len(features.codes),
                  "duration_s": None if features is None else features.duration_s,
                  "truncated_at_s": None if features is None else features.truncated_at_s}
        for name, value in values.items():
            files[name].append(value)
    writer.close()
    return {"parts": [(f"{SHARDS_DIR}/{name}", size) for name, size in writer.written], "files": files,
            "seconds": time.monotonic() - started, "peak_rss_mb": _peak_rss_mb()}


def _shard_columns(entry, features) -> dict[str, list]:
    """The shard columns (all but ``codes``) of one file's windows.

    A file's windows are held until it has decoded completely, so that a file
    failing halfway leaves no rows: with the shard buffer, a worker holds at most
    ``--shard-mb`` plus one file's codes (27.5 KB per window, at most
    ``--max-windows`` windows).
    """
    count = len(features.start_s)
    return {"path": [entry.path] * count, "label": [entry.label] * count, "group": [entry.group] * count,
            "genre": [entry.genre] * count, "split": [entry.split] * count, "window": list(range(count)),
            "start_s": features.start_s.tolist(), "duration_s": (features.end_s - features.start_s).tolist(),
            "sample_rate": [features.sample_rate] * count, "channels": [features.channels] * count}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


# ---------------------------------------------------------------------------- the driver

def settings_of(config, *, max_windows: int) -> str:
    """What every shard depends on beside its file: the full feature config and ``--max-windows``."""
    return json.dumps({"config": json.loads(config.to_json()), "max_windows": max_windows}, sort_keys=True)


@dataclass
class _Progress:
    """What the driver counts while tasks finish, and prints as progress."""

    total: int
    started: float = field(default_factory=time.monotonic)
    files: int = 0
    windows: int = 0
    errors: int = 0
    task_seconds: float = 0.0
    worker_peak_rss_mb: float = 0.0
    _last_print: float = 0.0

    def add(self, result: dict[str, Any]) -> None:
        self.files += len(result["files"]["status"])
        self.errors += sum(status != "ok" for status in result["files"]["status"])
        self.windows += sum(result["files"]["windows"])
        self.task_seconds += result["seconds"]
        self.worker_peak_rss_mb = max(self.worker_peak_rss_mb, result["peak_rss_mb"])

    def print(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < PROGRESS_EVERY_S:
            return
        self._last_print = now
        rate = self.files / max(now - self.started, 1e-9)
        eta = time.strftime("%H:%M:%S", time.gmtime((self.total - self.files) / rate)) if rate > 0 else "?"
        print(f"featurize: {self.files}/{self.total} files to do, {self.windows} windows, {self.errors} errors, "
              f"{self.windows / max(now - self.started, 1e-9):.1f} windows/s, {rate:.1f} files/s, ETA {eta}",
              file=sys.stderr, flush=True)


def featurize_archive(sources: Sequence[str], *, out: str, config, layout: str = "auto",
                      fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                      shard_mb: float = DEFAULT_SHARD_MB, files_per_task: int = DEFAULT_FILES_PER_TASK,
                      allow_outside: bool = False, limits=None, isolate: bool = True,
                      progress: bool = True, verify: bool = False) -> dict[str, Any]:
    """Featurize ``sources`` into ``out`` on the connected Ray cluster, incrementally (see the module docstring).

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
    verify : bool
        Read every committed shard in full first; the files of a damaged one are featurized again.

    Returns
    -------
    dict
        The manifest written to ``out/manifest.json``.

    Raises
    ------
    InputError
        An empty listing, conflicting metadata for one file, bad sources (nothing is changed).
    StorageFullError
        The output ran out of space; the last committed snapshot is intact.
    """
    from msc_core.audio import DecodeLimits
    from msc_core.engine import list_entries
    from msc_core.sources import iter_items
    from msc_core.storage import is_uri

    out = out.rstrip("/") if is_uri(out) else os.path.abspath(out)
    limits = limits or DecodeLimits()
    listing = list_entries(iter_items(sources, layout=layout, allow_outside=allow_outside), fractions=fractions,
                           seed=seed, sources=sources)
    try:
        run, counted, failed = _featurize(listing, out=out, config=config, limits=limits, shard_mb=shard_mb,
                                          files_per_task=files_per_task, isolate=isolate, progress=progress,
                                          verify=verify)
        records = run.finish()
        manifest = _manifest(records, run=run, counted=counted, failed=failed, sources=sources, out=out,
                             config=config, layout=layout, fractions=fractions, seed=seed, shard_mb=shard_mb,
                             files_per_task=files_per_task, allow_outside=allow_outside, limits=limits,
                             isolate=isolate)
        _write_exports(records, failed, out=out)
        _write_bytes_atomic(f"{out}/manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    except Exception as error:
        _stop_if_disk_full(error, out=out)
        raise
    if progress:
        counted.print(force=True)
    return manifest


def _featurize(listing, *, out: str, config, limits, shard_mb: float, files_per_task: int, isolate: bool,
               progress: bool, verify: bool):
    """Plan ``listing`` against ``out``'s snapshot and run its chunks on Ray, committing as they finish.

    Returns the :class:`msc_core.engine.Run`, the progress counts and the error rows of tasks that died.
    """
    import ray

    from jobs.raylib import cluster_cpus
    from msc_core.engine import Run

    run = Run(out, listing=listing, settings=settings_of(config, max_windows=limits.max_windows),
              files_per_chunk=files_per_task, part_folders=[SHARDS_DIR], extra_fields=list(_schema(RECORD_FIELDS)),
              every_chunks=max(2, cluster_cpus()), verify=verify)
    if progress:
        print(f"featurize: {len(listing.entries)} files listed ({listing.duplicates} duplicates), "
              + ", ".join(f"{count} {name}" for name, count in run.plan.counts().items()), file=sys.stderr, flush=True)
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(featurize_chunk)
    max_in_flight = TASKS_PER_CPU * cluster_cpus()
    shard_bytes = int(shard_mb * 2 ** 20)
    config_json = config.to_json()
    counted = _Progress(total=sum(len(chunk.entries) for chunk in run.plan.chunks))
    failed: list[dict[str, str]] = []
    in_flight: dict[Any, Any] = {}

    def collect(refs: Iterable) -> None:
        for ref in refs:
            chunk = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayError, OSError) as error:
                _stop_if_disk_full(error, out=out)
                failed.extend(_failed_task_rows(chunk, error))  # not committed: redone by the next run
                continue
            run.done(chunk, parts=result["parts"], extra=result["files"])
            counted.add(result)
            if progress:
                counted.print()

    try:
        for chunk in run.plan.chunks:
            while len(in_flight) >= max_in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                collect(ready)
            ref = task.remote(chunk, out=out, config_json=config_json, shard_bytes=shard_bytes, limits=limits,
                              isolate=isolate)
            in_flight[ref] = chunk
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            collect(ready)
    except BaseException:
        for ref in in_flight:  # stop what is left, and take its errors so that Ray does not print them
            ray.cancel(ref, force=True)
        for ref in in_flight:
            try:
                ray.get(ref)
            except Exception:  # noqa: BLE001 - the job stops with the first error
                continue
        raise
    return run, counted, failed


def _stop_if_disk_full(error: BaseException, *, out: str) -> None:
    """Raise :class:`StorageFullError` (once, for the whole job) when ``error`` is a full disk."""
    from msc_core.engine import is_disk_full
    from msc_core.errors import StorageFullError

    if is_disk_full(error):
        raise StorageFullError(f"no space left on device writing {out}; the last committed snapshot is intact "
                               "(free some space and rerun the same command to go on)") from None


def _failed_task_rows(chunk, error: Exception) -> list[dict[str, str]]:
    """Error rows for every file of a chunk whose task died (worker crash, unwritable output)."""
    from msc_core.engine import clean_message

    message = clean_message(f"task of the chunk failed: {error}".splitlines()[0])
    return [{"path": entry.path, "stage": "task", "error_type": type(error).__name__, "message": message}
            for entry in chunk.entries]


def _write_exports(records, failed: list[dict[str, str]], *, out: str) -> None:
    """``errors.parquet`` and ``truncated.parquet`` of the committed snapshot (plus this run's dead tasks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from msc_core.shards import write_atomic

    errors = records.filter(pc.equal(records["status"], "error")).select([name for name, _ in ERROR_SCHEMA])
    errors = pa.concat_tables([errors.cast(_schema(ERROR_SCHEMA)),
                               pa.Table.from_pylist(failed, schema=_schema(ERROR_SCHEMA))])
    truncated = records.filter(pc.is_valid(records["truncated_at_s"])).select([name for name, _ in TRUNCATED_SCHEMA])
    write_atomic(errors, f"{out}/errors.parquet")
    write_atomic(truncated.cast(_schema(TRUNCATED_SCHEMA)), f"{out}/truncated.parquet")


def _schema(fields: Sequence[tuple[str, str]]):
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in fields])


def _write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`msc_core.shards.atomic_output`."""
    from msc_core.shards import atomic_output

    with atomic_output(path) as sink:
        sink.write(data)


def _nested(table, column: str) -> dict[str, dict[str, int]]:
    """Sum of ``column`` (or a count when ``column`` is None) of ok records by label, then split."""
    nested: dict[str, dict[str, int]] = {}
    for label, split, value in zip(table["label"].to_pylist(), table["split"].to_pylist(),
                                   table[column].to_pylist() if column else [1] * len(table)):
        by_split = nested.setdefault(label or "unlabelled", {})
        by_split[split or "none"] = by_split.get(split or "none", 0) + value
    return {label: dict(sorted(by_split.items())) for label, by_split in sorted(nested.items())}


def _versions() -> dict[str, str]:
    import ray

    from msc_core.config import msc_version

    versions = {"msc": msc_version(), "ray": ray.__version__, "python": platform.python_version()}
    for package in ("tensorflow-cpu", "tensorflow", "numpy", "librosa", "soxr", "soundfile", "pyarrow", "deltalake"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _manifest(records, *, run, counted: _Progress, failed, sources, out, config, layout, fractions, seed, shard_mb,
              files_per_task, allow_outside, limits, isolate) -> dict[str, Any]:
    """What ``manifest.json`` says about the committed snapshot and about this run."""
    import pyarrow.compute as pc

    elapsed = time.monotonic() - counted.started
    ok = records.filter(pc.equal(records["status"], "ok"))
    chunks = len(set(records["chunk"].to_pylist()))
    return {
        "config": json.loads(config.to_json()),
        "feature_hash": config.hash,
        "inputs": {"sources": list(sources), "out": out, "layout": layout, "allow_outside": allow_outside,
                   "split": list(fractions), "seed": seed, "shard_mb": shard_mb, "files_per_task": files_per_task,
                   "file_timeout_s": limits.max_decode_s, "max_windows": limits.max_windows, "isolate": isolate},
        "counts": {"files": _nested(ok, None), "windows": _nested(ok, "windows")},
        "files": len(ok),
        "windows": int(pc.sum(ok["windows"]).as_py() or 0),
        "errors": len(records) - len(ok) + len(failed),
        "truncated": int(pc.sum(pc.is_valid(records["truncated_at_s"])).as_py() or 0),
        "listed": len(run.listing.entries),
        "duplicates": run.listing.duplicates,
        "changes": run.plan.counts(),
        "snapshot": run.records.version(),
        "chunks": chunks,
        "chunks_reused": len(run.plan.kept),
        "shards": len(committed_shards(records)),
        "versions": _versions(),
        "timings": {"seconds": elapsed, "windows_per_s": counted.windows / max(elapsed, 1e-9),
                    "task_seconds": counted.task_seconds},
        "memory": {"worker_peak_rss_mb": counted.worker_peak_rss_mb, "driver_peak_rss_mb": _peak_rss_mb()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def committed_shards(records) -> list[str]:
    """Shard names (relative to the output folder) the committed records reference."""
    from msc_core.engine import committed_parts

    return sorted(committed_parts(records))


def summary_line(manifest: dict[str, Any]) -> str:
    """One line for the console: files, windows, errors, shards, time and where things are."""
    timings = manifest["timings"]
    truncated = f", {manifest['truncated']} truncated (see truncated.parquet)" if manifest.get("truncated") else ""
    changes = ", ".join(f"{count} {name}" for name, count in manifest["changes"].items())
    return (f"featurize done: {manifest['files']} files, {manifest['windows']} windows, {manifest['errors']} errors"
            f"{truncated} ({changes}), "
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
