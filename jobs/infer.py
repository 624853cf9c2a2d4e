"""``msc infer SRC... --model MODEL --out DIR``: label whole archives with a streaming Ray Data pipeline.

Pipeline (no audio, codes or probabilities pass through the driver; it holds only the listing)::

    chunks of files (from the manifest)                      driver: listing only
      -> featurize_chunk      tasks: decode + featurize each file (in a supervised child process
                              killed after --file-timeout), one block of window rows per chunk
      -> LabelWindows         actor pool: the model, loaded once per actor, batched predict
      -> WriteChunks          one small actor: per-file aggregation, then the chunk's parts
      -> driver               one tiny summary row per chunk; assembles the final files at the end

Why files travel in chunks and aggregation happens in a stateful writer: a
file's label needs all its windows, but Ray Data may split or merge blocks
between stages, so "one block = one file" cannot be relied on. Instead every
window row carries its chunk's id and row count; :class:`WriteChunks` holds the
probability rows of chunks not yet complete (about 60 bytes per window, no
codes) and writes a chunk as soon as all its rows have arrived. This avoids a
``groupby`` shuffle, which would hold back every row of the archive until the
last one is predicted; memory stays bounded by the chunks in flight.

Output files under ``DIR``:

- ``parts/manifest.parquet``: the chunks (id, paths) fixed by the first run, with
  the sources, model and window policy in its metadata;
- ``parts/{predictions,windows,segments}/<chunk_id>.parquet``: one chunk each,
  written atomically, predictions last (its presence marks the chunk done);
- ``predictions.parquet``/``.csv``, ``windows.parquet``, ``segments.parquet``/``.csv``:
  assembled atomically from the parts in manifest order once every chunk is done
  (see :mod:`msc_core.labelling` for the columns and the aggregation rule); the
  run summary is in the Parquet files' metadata, the CSVs carry 6 significant digits;
- ``summary.json`` and ``report.html``: the run's facts and its report page
  (:mod:`msc_core.report`), written last.

A rerun with the same ``--out`` reuses the manifest and only processes chunks
with no predictions part, so an interrupted job resumes with no duplicate and no
missing file. Within one run, chunks left without output because a worker or a
node died (Ray restarts the actors and retries the tasks, but a restarted writer
has lost the rows it was holding) are run again, up to :data:`PIPELINE_ATTEMPTS` times. Exit code: 0 every file labelled, 1 some files failed to decode.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from jobs.console import NORMAL, level, progress, summary
from jobs.options import add_limit_arguments, add_window_arguments, decode_limits, window_config
from jobs.raylib import add_ray_arguments, init_ray, largest_node_cpus

log = logging.getLogger("msc.infer")

PART_KINDS = ("windows", "segments", "predictions")  # written in this order; predictions marks a chunk done
MANIFEST = "parts/manifest.parquet"
WRITER_CPUS = 0.1
PIPELINE_ATTEMPTS = 3  # runs of the pipeline over chunks still without output (lost to dead workers or nodes)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc infer``."""
    parser = subparsers.add_parser(
        "infer", help="label whole archives on Ray (per file, per window, segments)",
        description="Label every audio file under SRC with a model: predictions, windows and segments as "
                    "Parquet/CSV under --out. Resumes an interrupted run with the same --out.")
    parser.add_argument("sources", nargs="+", metavar="SRC",
                        help="folders, globs, file lists (.txt/.lst), audio files or fsspec URIs")
    parser.add_argument("--model", default=None, metavar="MODEL_DIR",
                        help="msc model directory (default: the model bundled with msc)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (local path or URI)")
    add_window_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument("--format", default="parquet,csv", metavar="FMT",
                        help="final file formats, comma-separated from parquet,csv (default both)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    parser.add_argument("--num-gpus", type=float, default=0.0,
                        help="GPUs per model actor (default 0: CPU); the pool gets one actor per that many GPUs")
    parser.add_argument("--chunk-files", type=int, default=8,
                        help="files per chunk, the unit of work, of resuming and of a part file (default 8)")
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Plan:
    """Resources of each stage, sized so that the pipeline always has room to make progress.

    Attributes
    ----------
    actors : int
        Model actors in the pool.
    actor_cpus, actor_gpus : float
        Logical resources reserved by each model actor.
    task_cpus : float
        Logical CPUs of each featurize task.
    """

    actors: int
    actor_cpus: float
    actor_gpus: float
    task_cpus: float


def plan_resources(*, cpus: float, gpus: float, gpus_per_actor: float, node_cpus: float | None = None) -> Plan:
    """Size the model pool from a cluster's resources.

    A pool that reserves every CPU starves the featurize tasks and the writer
    and hangs without an error, so the model actors share only what is left
    after one featurize task and the writer (:data:`WRITER_CPUS`): at most one
    logical CPU each, fractional on small clusters. One actor, one task and the
    writer also fit together on the largest node, so that the pipeline still
    makes progress when every other node is lost. TensorFlow inside an actor
    still uses every core it finds while the tasks are idle.

    Parameters
    ----------
    cpus, gpus : float
        The cluster's totals (``ray.cluster_resources()``).
    node_cpus : float or None
        CPUs of the largest node (default ``cpus``: one node).
    gpus_per_actor : float
        ``--num-gpus``; 0 runs the model on CPUs with one actor per 8 CPUs.

    Raises
    ------
    InputError
        GPUs asked for on a cluster without enough of them.
    """
    from msc_core.errors import InputError

    if gpus_per_actor > 0:
        if gpus < gpus_per_actor:
            raise InputError(f"--num-gpus {gpus_per_actor} per actor, but the cluster has {gpus:g} GPUs")
        actors = int(gpus // gpus_per_actor)
    else:
        actors = max(1, int(cpus // 8))
    node_cpus = cpus if node_cpus is None else min(node_cpus, cpus)
    task_cpus = 1.0 if node_cpus >= 2 else 0.5 * node_cpus
    spare, node_spare = cpus - task_cpus - WRITER_CPUS, node_cpus - task_cpus - WRITER_CPUS
    if node_spare <= 0:
        raise InputError(f"the largest node offers {node_cpus:g} CPUs; msc infer needs more than "
                         f"{task_cpus + WRITER_CPUS:g}")
    return Plan(actors=actors, actor_cpus=round(min(1.0, spare / actors, node_spare), 3), actor_gpus=gpus_per_actor,
                task_cpus=task_cpus)


# ---------------------------------------------------------------------------------------- stages
def featurize_chunk(batch: dict, *, config, limits, isolate: bool) -> Iterator[dict]:
    """Decode and featurize every file of each chunk in ``batch``; one output batch per chunk.

    With ``isolate``, files are decoded in this worker's supervised child
    process, killed when one overruns ``limits.max_decode_s`` (DecodeLimits).

    Output columns (one row per window; one row with zero codes per file that failed):
    ``chunk_id`` str, ``chunk_rows`` int64 (rows of the whole chunk), ``row`` int64 (index in the chunk), ``file`` int32
    (index in the chunk), ``path`` str, ``start_s``/``end_s``/``duration_s`` float64 (s),
    ``truncated_at_s`` float64 (s; NaN unless ``limits.max_windows`` cut the file),
    ``error`` str ("" when ok), ``codes`` uint8 (rows, n_mels, frames).
    """
    from msc_core.errors import MscError
    from msc_core.isolation import shared_child
    from msc_core.labelling import featurize_file, warm_up

    child = shared_child(warm_up=warm_up) if isolate else None
    empty = np.zeros((1, *config.encoded_shape), np.uint8)
    for chunk_id, paths in zip(batch["chunk_id"], batch["paths"]):
        columns = {"file": [], "path": [], "start_s": [], "end_s": [], "duration_s": [], "truncated_at_s": [],
                   "error": [], "codes": []}
        for index, path in enumerate(paths):
            try:
                features = featurize_file(path, config, limits=limits, child=child)
            except MscError as error:
                rows, values = 1, (np.zeros(1), np.zeros(1), np.nan, np.nan, str(error), empty)
            else:
                rows = len(features.start_s)
                values = (features.start_s, features.end_s, features.duration_s,
                          np.nan if features.truncated_at_s is None else features.truncated_at_s, "", features.codes)
            start_s, end_s, duration_s, truncated_at_s, message, codes = values
            columns["file"].append(np.full(rows, index, np.int32))
            columns["path"].append(np.full(rows, path, object))
            columns["start_s"].append(start_s)
            columns["end_s"].append(end_s)
            columns["duration_s"].append(np.full(rows, duration_s))
            columns["truncated_at_s"].append(np.full(rows, truncated_at_s))
            columns["error"].append(np.full(rows, message, object))
            columns["codes"].append(codes)
        out = {name: np.concatenate(parts) for name, parts in columns.items()}
        total = len(out["file"])
        yield {"chunk_id": np.full(total, chunk_id, object), "chunk_rows": np.full(total, total, np.int64),
               "row": np.arange(total, dtype=np.int64), **out}


class LabelWindows:
    """The model stage: loads the model once per actor and predicts every ok window of a batch.

    Replaces ``codes`` with ``p_speech`` and ``p_music`` (float32; NaN on error rows).
    """

    def __init__(self, model_dir: str | None, batch_size: int):
        from msc_core.labelling import load_model

        self.model = load_model(model_dir)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        ok = batch["error"] == ""
        probs = np.full((len(ok), 2), np.nan, np.float32)
        if ok.any():
            probs[ok] = self.model.predict_codes(np.asarray(batch["codes"][ok], np.uint8),
                                                 batch_size=self.batch_size)
        out = {name: values for name, values in batch.items() if name != "codes"}
        out["p_speech"], out["p_music"] = probs[:, 0], probs[:, 1]
        return out


class WriteChunks:
    """Aggregates each chunk once all its rows have arrived and writes its part files.

    A row delivered twice (by a retried task) is kept once. Returns one row per
    chunk written: ``chunk_id``, ``files``, ``errors``.
    """

    def __init__(self, out_dir: str, model_id: str, feature_hash: str):
        import threading

        from msc_core.shards import resolve_filesystem

        self.filesystem, self.root = resolve_filesystem(out_dir)
        self.root = self.root.rstrip("/")
        for kind in PART_KINDS:
            self.filesystem.create_dir(f"{self.root}/parts/{kind}", recursive=True)
        self.model_id, self.feature_hash = model_id, feature_hash
        self.pending: dict[str, list] = {}
        self.lock = threading.Lock()  # Ray Data may call an actor from more than one thread

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        written = {"chunk_id": [], "files": [], "errors": []}
        for chunk_id in pc.unique(batch["chunk_id"]).to_pylist():
            rows = batch.filter(pc.equal(batch["chunk_id"], chunk_id))
            with self.lock:
                have = self.pending.setdefault(chunk_id, [])
                have.append(rows)
                complete = pa.concat_tables(have)
                _, first = np.unique(complete["row"].to_numpy(), return_index=True)
                if len(first) < rows["chunk_rows"][0].as_py():
                    continue
                del self.pending[chunk_id]
            complete = complete.take(first)
            files, errors = self._write(chunk_id, complete)
            for name, value in (("chunk_id", chunk_id), ("files", files), ("errors", errors)):
                written[name].append(value)
        return pa.table(written, schema=pa.schema([("chunk_id", pa.string()), ("files", pa.int64()),
                                                   ("errors", pa.int64())]))

    def _write(self, chunk_id: str, rows) -> tuple[int, int]:
        """Aggregate one complete chunk per file and write its parts; returns (files, errors)."""
        from msc_core.labelling import FileLabel, aggregate, label_tables
        from msc_core.shards import write_atomic

        columns = {name: rows[name].to_numpy(zero_copy_only=False) for name in
                   ("file", "path", "start_s", "end_s", "duration_s", "truncated_at_s", "error", "p_speech", "p_music")}
        order = np.lexsort((columns["start_s"], columns["file"]))
        columns = {name: values[order] for name, values in columns.items()}
        labels = []
        for run in np.split(np.arange(len(order)), np.flatnonzero(np.diff(columns["file"])) + 1):
            first = run[0]
            path = str(columns["path"][first])
            if columns["error"][first]:
                labels.append(FileLabel.failed(path, str(columns["error"][first]), model_id=self.model_id,
                                               feature_hash=self.feature_hash))
                continue
            truncated_at_s = float(columns["truncated_at_s"][first])
            labels.append(aggregate(
                path, start_s=columns["start_s"][run], end_s=columns["end_s"][run],
                duration_s=float(columns["duration_s"][first]),
                truncated_at_s=None if np.isnan(truncated_at_s) else truncated_at_s,
                probs=np.stack([columns["p_speech"][run], columns["p_music"][run]], axis=1),
                model_id=self.model_id, feature_hash=self.feature_hash))
        tables = dict(zip(("predictions", "windows", "segments"), label_tables(labels)))
        for kind in PART_KINDS:
            write_atomic(tables[kind], part_path(self.root, kind, chunk_id), filesystem=self.filesystem)
        return len(labels), sum(label.status != "ok" for label in labels)


# ---------------------------------------------------------------------------------------- files
def part_path(root: str, kind: str, chunk_id: str) -> str:
    """Where chunk ``chunk_id``'s ``kind`` part lives under the output root."""
    return f"{root}/parts/{kind}/{chunk_id}.parquet"


def chunk_id_of(paths: Sequence[str]) -> str:
    """Deterministic id of a chunk: 16 hex digits of the hash of its paths, in order."""
    return hashlib.sha1("\n".join(paths).encode()).hexdigest()[:16]


def manifest_metadata(*, sources: Sequence[str], model_id: str, config, max_windows: int) -> dict[bytes, bytes]:
    """What a run's manifest records: a rerun into the same DIR must agree on all of it."""
    from msc_core.audio import DecodeLimits

    run = {"sources": list(sources), "model_id": model_id, "feature_hash": config.hash,
           "window": config.window.mode, "hop_seconds": config.window.hop_seconds}
    if max_windows != DecodeLimits().max_windows:  # the default leaves manifests of earlier msc versions valid
        run["max_windows"] = max_windows
    return {b"msc.infer": json.dumps(run, sort_keys=True).encode()}


def open_manifest(filesystem, root: str, *, sources: Sequence[str], chunk_files: int,
                  metadata: dict[bytes, bytes]) -> None:
    """Write ``parts/manifest.parquet`` (the listing cut into chunks) unless a run made it already.

    The driver holds the listing while it writes it (paths only, about 100 bytes per file).

    Raises
    ------
    InputError
        The existing manifest was made with other sources, model or window policy.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from msc_core.errors import InputError
    from msc_core.shards import write_atomic
    from msc_core.sources import iter_audio_paths

    path = f"{root}/{MANIFEST}"
    if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
        found = pq.read_schema(path, filesystem=filesystem).metadata or {}
        if found.get(b"msc.infer") != metadata[b"msc.infer"]:
            raise InputError(f"{root} holds a run with other settings ({found.get(b'msc.infer', b'?').decode()}); "
                             "use a new --out, or the same sources, model and window policy to resume")
        return
    chunk_ids, chunk_paths, current = [], [], []

    def close_chunk() -> None:
        chunk_ids.append(chunk_id_of(current))
        chunk_paths.append(list(current))
        current.clear()

    for audio_path in iter_audio_paths(sources):
        current.append(audio_path)
        if len(current) == chunk_files:
            close_chunk()
    if current:
        close_chunk()
    schema = pa.schema([("chunk_id", pa.string()), ("paths", pa.list_(pa.string()))], metadata=metadata)
    filesystem.create_dir(f"{root}/parts", recursive=True)
    write_atomic(pa.table({"chunk_id": chunk_ids, "paths": chunk_paths}, schema=schema), path,
                 filesystem=filesystem)


def iter_manifest(filesystem, root: str) -> Iterator[tuple[str, list[str]]]:
    """(chunk_id, paths) of every chunk, in listing order."""
    import pyarrow.parquet as pq

    with filesystem.open_input_file(f"{root}/{MANIFEST}") as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=4096):
            yield from zip(batch["chunk_id"].to_pylist(), batch["paths"].to_pylist())


def done_chunks(filesystem, root: str) -> set[str]:
    """Ids of chunks whose predictions part exists (complete, since parts are written atomically)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(f"{root}/parts/predictions", allow_not_found=True)
    return {info.base_name.removesuffix(".parquet") for info in filesystem.get_file_info(selector)
            if info.base_name.endswith(".parquet")}


def assemble(filesystem, root: str, *, formats: Sequence[str], run_summary) -> None:
    """Concatenate every chunk's parts, in manifest order, into the final files (each written atomically).

    Streams one part at a time; the predictions (assembled first) are counted
    into ``run_summary`` (:class:`msc_core.report.RunSummary`), whose facts go into
    every Parquet file's metadata; CSVs get :func:`msc_core.report.csv_table`.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from msc_core.labelling import PREDICTIONS_SCHEMA, SEGMENTS_SCHEMA, WINDOWS_SCHEMA
    from msc_core.report import csv_schema, csv_table
    from msc_core.shards import atomic_output

    schemas = {"predictions": PREDICTIONS_SCHEMA, "windows": WINDOWS_SCHEMA, "segments": SEGMENTS_SCHEMA}
    for kind, schema in schemas.items():
        targets = [f"{root}/{kind}.parquet"] if "parquet" in formats or kind == "windows" else []
        if "csv" in formats and kind != "windows":
            targets.append(f"{root}/{kind}.csv")
        with contextlib.ExitStack() as outputs:  # every target appears only once all are complete
            streams = [outputs.enter_context(atomic_output(target, filesystem=filesystem)) for target in targets]
            writers = [pq.ParquetWriter(stream, schema, compression="zstd") if target.endswith(".parquet")
                       else pacsv.CSVWriter(stream, csv_schema(schema)) for stream, target in zip(streams, targets)]
            try:
                for chunk_id, _ in iter_manifest(filesystem, root):
                    table = pq.read_table(part_path(root, kind, chunk_id), filesystem=filesystem, schema=schema)
                    for writer in writers:
                        writer.write_table(table if isinstance(writer, pq.ParquetWriter) else csv_table(table))
                    if kind == "predictions":
                        run_summary.add(table)
                for writer in writers:
                    if isinstance(writer, pq.ParquetWriter):
                        writer.add_key_value_metadata(run_summary.parquet_metadata())
            finally:
                for writer in writers:
                    writer.close()


# ---------------------------------------------------------------------------------------- run
def label_chunks(pending: list[dict], *, args: argparse.Namespace, config, limits, model_dir: str,
                 model_id: str) -> None:
    """Run the pipeline once over ``pending`` chunks (``{"chunk_id", "paths"}``) on the connected cluster.

    Chunks whose rows were lost (a writer actor restarted after its node died)
    simply stay without a predictions part; :func:`run` runs them again.
    """
    import ray

    resources = ray.cluster_resources()
    plan = plan_resources(cpus=resources.get("CPU", 1), gpus=resources.get("GPU", 0),
                          gpus_per_actor=args.num_gpus, node_cpus=largest_node_cpus())
    log.info("resources %s -> %s", resources, plan)
    dataset = (
        ray.data.from_items(pending, override_num_blocks=len(pending))
        .map_batches(featurize_chunk, batch_size=1, num_cpus=plan.task_cpus,
                     fn_kwargs={"config": config, "limits": limits, "isolate": not args.no_isolation})
        .map_batches(LabelWindows, batch_size=None, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                     num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None,
                     fn_constructor_kwargs={"model_dir": model_dir, "batch_size": args.batch_size})
        .map_batches(WriteChunks, batch_size=None, batch_format="pyarrow", num_cpus=WRITER_CPUS,
                     compute=ray.data.ActorPoolStrategy(size=1),
                     fn_constructor_kwargs={"out_dir": args.out, "model_id": model_id, "feature_hash": config.hash})
    )
    failed = 0
    with progress(total=sum(len(chunk["paths"]) for chunk in pending), unit="files", desc="infer") as bar:
        for written in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            failed += sum(written["errors"].to_pylist())
            bar.set_postfix_str(f"{failed} failed", refresh=False)
            bar.update(sum(written["files"].to_pylist()))


def run(args: argparse.Namespace) -> int:
    """Run ``msc infer``: list, label the chunks not yet done (again while some are lost), assemble, summarize."""
    import ray

    from msc_core.errors import InputError, MscError
    from msc_core.labelling import DEFAULT_MODEL_DIR, load_model
    from msc_core.report import RunSummary, arguments_of, finish_run
    from msc_core.shards import resolve_filesystem
    from msc_core.storage import require_output_dir

    run_summary = RunSummary("infer", arguments=arguments_of(args))
    formats = [name.strip() for name in args.format.split(",") if name.strip()]
    if not formats or set(formats) - {"parquet", "csv"}:
        raise InputError(f"--format takes parquet and/or csv, not {args.format!r}")
    if args.chunk_files < 1 or args.batch_size < 1:
        raise InputError("--chunk-files and --batch-size must be at least 1")
    require_output_dir(args.out)
    config = window_config(args)
    limits = decode_limits(args)
    model = load_model(args.model)  # checks the model and its features before any work starts
    model_dir = str(args.model or DEFAULT_MODEL_DIR)
    run_summary.model_id, run_summary.feature_hash = model.model_id, config.hash
    run_summary.mark("loading")
    filesystem, root = resolve_filesystem(args.out)
    root = root.rstrip("/")
    open_manifest(filesystem, root, sources=args.sources, chunk_files=args.chunk_files,
                  metadata=manifest_metadata(sources=args.sources, model_id=model.model_id, config=config,
                                             max_windows=limits.max_windows))
    run_summary.mark("listing")
    for attempt in range(PIPELINE_ATTEMPTS):
        done = done_chunks(filesystem, root)
        pending = [{"chunk_id": chunk_id, "paths": paths} for chunk_id, paths in iter_manifest(filesystem, root)
                   if chunk_id not in done]
        log.info("%d chunks already labelled, %d to do", len(done), len(pending))
        if not pending:
            break
        init_ray(args.address, num_cpus=args.num_cpus)
        try:
            label_chunks(pending, args=args, config=config, limits=limits, model_dir=model_dir,
                         model_id=model.model_id)
        except ray.exceptions.RayError as error:  # e.g. a node lost with the only copy of a block
            log.warning("attempt %d of %d failed: %s", attempt + 1, PIPELINE_ATTEMPTS, str(error).splitlines()[0])
    missing = len(list(iter_manifest(filesystem, root))) - len(done_chunks(filesystem, root))
    if missing:
        raise MscError(f"{missing} chunks have no output; rerun the same command to finish them")
    run_summary.mark("labelling")
    assemble(filesystem, root, formats=formats, run_summary=run_summary)
    run_summary.mark("assembling")
    result, *details = finish_run(args.out, run_summary)
    summary(result)
    if details and level() >= NORMAL:  # the first failed files by name, where the rest and the report are
        print("\n".join(details), file=sys.stderr, flush=True)
    return 1 if run_summary.failures else 0


if __name__ == "__main__":
    import sys

    from jobs.cli import main

    sys.exit(main(["infer", *sys.argv[1:]]))
