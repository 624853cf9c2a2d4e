"""``msc infer SRC... --model MODEL --out DIR``: label whole archives with a streaming Ray Data pipeline.

Pipeline (no audio, codes or probabilities pass through the driver; it holds only the listing)::

    chunks of files (from the manifest)                      driver: listing only
      -> decode_chunk         tasks: decode each file (in a supervised child process killed after
                              --file-timeout), one row per piece of a file: its windows' times
                              and its audio
      -> LabelWindows         actor pool: the model, loaded once per actor; featurizes the windows
                              it reads (a coarse pass first), batched predict; one row per window
      -> WriteChunks          one small actor: per-file aggregation, then the chunk's parts
      -> driver               one tiny summary row per chunk; assembles the final files at the end

Why files travel in chunks and aggregation happens in a stateful writer: a
file's label needs all its windows, but Ray Data may split or merge blocks
between stages, so "one block = one file" cannot be relied on. Instead every
window row carries its chunk's id and its index in the chunk, and the rows of
the chunk's last piece carry the chunk's row count; :class:`WriteChunks` holds the
probability rows of chunks not yet complete (about 60 bytes per window, no
codes, plus each file's frame cues for silence and boundaries: 3.6 KB per second of
audio) and writes a chunk as soon as all its rows have arrived. This avoids a
``groupby`` shuffle, which would hold back every row of the archive until the
last one is predicted; memory stays bounded by the pieces and chunks in flight
(a decode task holds one piece of audio, :data:`PIECE_S` seconds of windows,
whatever the file's length).

Output files under ``DIR``:

- ``_files``: the Delta Lake table of file records (:mod:`msc_core.engine`):
  location, fingerprint, settings and chunk of every listed file; its last
  version is the snapshot;
- ``parts/{predictions,windows,segments}/<chunk_id>.parquet``: one chunk each,
  written atomically before the chunk is committed;
- ``predictions.parquet``/``.csv``, ``windows.parquet``, ``segments.parquet``/``.csv``:
  assembled atomically from the committed parts in listing order once every
  chunk is done (see :mod:`msc_core.labelling` for the columns and the aggregation rule).

Every run lists its sources again and runs on the engine of
:mod:`msc_core.engine`: new files, changed files (size and mtime; ETag and
version on object stores), files whose parts are missing or damaged, and every
file after a change of model, features or window policy are labelled; files no
longer listed leave the outputs; the rest is reused. Sources are compared by
resolved location, so ``inc`` and ``./inc`` are the same and another folder
named ``inc`` is another listing. Chunks are committed per batch, so a killed
run resumes with no duplicate and no missing file. Within one run, chunks left
without output because a worker or a node died (Ray restarts the actors and
retries the tasks, but a restarted writer has lost the rows it was holding)
are run again, up to :data:`PIPELINE_ATTEMPTS` times. Exit code: 0 every file
labelled, 1 some files failed to decode, 2 usage errors, an empty listing or
a full disk (the last snapshot intact).

Python API: :func:`infer_archive`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from jobs.console import NORMAL, level, progress, summary
from jobs.options import (add_limit_arguments, add_precision_argument, add_view_argument, add_window_arguments,
                          decode_limits, labelling_windows)
from jobs.raylib import add_ray_arguments, init_ray, node_cpus

log = logging.getLogger("msc.infer")

PART_KINDS = ("windows", "segments", "predictions")  # written in this order; predictions marks a chunk done
WRITER_CPUS = 0.1
MAX_ACTOR_THREADS = 8  # CPUs (and TensorFlow threads) of one model actor at most; larger nodes run several
DECODE_SHARE = 0.1  # of each node's CPUs kept for decode tasks (0.35 measured the same on 2 CPUs)
PIPELINE_ATTEMPTS = 3  # runs of the pipeline over chunks still without output (lost to dead workers or nodes)
COMMIT_EVERY_CHUNKS = 4  # chunks per commit of the file records (or every 10 s): what a killed run can lose
PIECE_S = 300.0  # seconds of windows in one row between decoding and the model (26 MB of audio)

PIECE_SCHEMA = pa.schema([
    ("chunk_id", pa.string()), ("chunk_rows", pa.int64()), ("row", pa.int64()), ("owned", pa.int64()),
    ("file", pa.int64()), ("path", pa.string()), ("error", pa.string()), ("duration_s", pa.float64()),
    ("truncated_at_s", pa.float64()), ("cues", pa.binary()), ("start_s", pa.large_list(pa.float64())),
    ("end_s", pa.large_list(pa.float64())), ("signal", pa.large_list(pa.float32())),
    ("codes", pa.large_list(pa.uint8())),
])
"""The rows between decoding and the model (:func:`decode_chunk`), one per piece of a file:

``chunk_rows`` the chunk's windows on its last row, -1 on the others; ``row`` the index in the chunk of
the piece's first window; ``owned`` the piece's own windows, the first ones (the one after is the next
piece's); ``file`` the index in the chunk; ``error`` "" when ok; ``duration_s`` (s) NaN but on a file's
last piece; ``truncated_at_s`` (s) NaN unless ``DecodeLimits.max_windows`` cut the file; ``cues`` the
file's :meth:`msc_core.segmentation.FrameCues.to_bytes` on its last piece, empty on the others;
``start_s``/``end_s`` (s) its windows; ``signal`` float32 mono audio at the features' rate from the
piece's first window to its last window's end (empty when featurized in the decode task); ``codes`` uint8
(W, n_mels, frames) flattened, when featurized there (else empty).
"""


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
    add_window_arguments(parser, labelling=True)
    add_view_argument(parser)
    add_limit_arguments(parser)
    parser.add_argument("--format", default="parquet,csv", metavar="FMT",
                        help="final file formats, comma-separated from parquet,csv (default both)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    add_precision_argument(parser)
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
        Most model actors in the pool (it starts with all of them and keeps at least one).
    actor_cpus, actor_gpus : float
        Logical resources reserved by each model actor.
    threads : int
        TensorFlow threads of each model actor: its CPUs, rounded (at least 1).
    task_cpus : float
        Logical CPUs of each decode task.
    """

    actors: int
    actor_cpus: float
    actor_gpus: float
    threads: int
    task_cpus: float


def plan_resources(*, node_cpus: Sequence[float], gpus: float, gpus_per_actor: float) -> Plan:
    """Size the model pool from a cluster's nodes.

    The model actors do most of the work (the model, and the features of the
    windows it reads; decoding is about 15 % of the CPU:
    ``benchmarks/bench_profile.py``). Each node keeps
    :data:`DECODE_SHARE` of its CPUs (at least one decode task's) for
    the decode tasks, and :data:`WRITER_CPUS` for the writer, and gives the
    rest to model actors of at most :data:`MAX_ACTOR_THREADS` CPUs, each
    running TensorFlow on as many threads as it reserves (rounded), so that
    actors do not oversubscribe a node and the pool grows with the cluster. A
    pool that reserved every CPU would starve the decode tasks and the
    writer and hang without an error; one actor, one task and the writer fit
    together on the largest node, so the pipeline makes progress while any
    node is left.

    Parameters
    ----------
    node_cpus : sequence of float
        CPUs of each node (:func:`jobs.raylib.node_cpus`).
    gpus : float
        The cluster's GPUs.
    gpus_per_actor : float
        ``--num-gpus``; 0 runs the model on CPUs.

    Raises
    ------
    InputError
        GPUs asked for on a cluster without enough of them, or no node large enough.
    """
    from msc_core.errors import InputError

    largest = max(node_cpus)
    if gpus_per_actor > 0:  # decoding and featurizing are the work: a CPU per task (half the node under 2 CPUs)
        task_cpus = 1.0 if largest >= 2 else 0.5 * largest
    else:  # the model and features are: a task needs a quarter of a CPU
        task_cpus = 0.25 * min(1.0, largest)

    def spare(cpus: float) -> float:
        return cpus - max(task_cpus, DECODE_SHARE * cpus) - WRITER_CPUS

    if spare(largest) <= 0:
        raise InputError(f"the largest node offers {largest:g} CPUs; msc infer needs more than "
                         f"{largest - spare(largest):g}")
    if gpus_per_actor > 0:
        if gpus < gpus_per_actor:
            raise InputError(f"--num-gpus {gpus_per_actor} per actor, but the cluster has {gpus:g} GPUs")
        actors, actor_cpus = int(gpus // gpus_per_actor), min(1.0, spare(largest))
    else:
        actor_cpus = spare(largest) / math.ceil(spare(largest) / MAX_ACTOR_THREADS)
        actors = max(1, sum(max(0, int(spare(cpus) / actor_cpus + 1e-9)) for cpus in node_cpus))
    actor_cpus = math.floor(actor_cpus * 1000) / 1000  # never more than the node has
    return Plan(actors=actors, actor_cpus=actor_cpus, actor_gpus=gpus_per_actor,
                threads=max(1, math.floor(actor_cpus + 0.5)), task_cpus=task_cpus)


# ---------------------------------------------------------------------------------------- stages
def piece_size(config, coarse_s: float | None) -> int:
    """Windows per piece of a file (:func:`decode_chunk`): about :data:`PIECE_S` seconds of window starts,
    a whole number of a coarse pass's spacing so that every piece starts on its grid."""
    hop_s = config.hop_samples / config.sample_rate
    step = 1 if coarse_s is None else int(round(coarse_s / hop_s))
    return step * max(1, round(PIECE_S / hop_s / step))


def decode_chunk(batch: dict, *, config, limits, isolate: bool, piece_windows: int,
                 featurize: bool = False) -> Iterator[pa.Table]:
    """Decode every file of each chunk in ``batch``: one output row per piece of a file, as it is decoded.

    The windows are not featurized here: the model's stage featurizes the ones
    it reads from the audio each row carries (:func:`msc_core.engine.process_file_pieces`).
    A file comes in pieces of ``piece_windows`` windows (:func:`piece_size`), each
    also holding the next piece's first window, so that a task holds one piece of
    audio whatever the file's length and a row stays small (Ray Data never splits
    a row). With ``isolate``, files are decoded in this worker's supervised child
    process, killed when one overruns ``limits.max_decode_s`` (DecodeLimits).
    With ``featurize`` (model actors on GPUs, each with one CPU), every window
    is featurized here instead, on the tasks' many CPUs, and its codes sent.

    Yields one Arrow table of one row per piece, :data:`PIECE_SCHEMA`; a file that fails gets a row with
    one window and its error, after any pieces that came before the error. Arrays travel as Arrow lists
    that share the NumPy arrays' memory.
    """
    from msc_core.engine import process_file_pieces
    from msc_core.isolation import shared_child
    from msc_core.labelling import warm_up

    child = shared_child(warm_up=warm_up) if isolate else None
    for chunk_id, paths in zip(batch["chunk_id"], batch["paths"]):
        held, rows = None, 0  # each row goes out once the next is made: the last one carries the count
        for index, path in enumerate(paths):
            for result in process_file_pieces(path, config, windows=piece_windows, limits=limits, child=child):
                piece = result.features
                row = {"chunk_id": chunk_id, "chunk_rows": -1, "row": rows, "file": index, "path": path,
                       "error": "", "truncated_at_s": np.nan, "cues": b"", "signal": np.zeros(0, np.float32),
                       "codes": np.zeros(0, np.uint8)}
                if piece is None:
                    row.update(owned=1, start_s=np.zeros(1), end_s=np.zeros(1), duration_s=np.nan,
                               error=result.message)
                else:
                    last = piece.cues is not None
                    row.update(owned=len(piece.start_s) - (not last), start_s=piece.start_s, end_s=piece.end_s,
                               duration_s=piece.duration_s, cues=piece.cues.to_bytes() if last else b"")
                    if featurize:
                        row["codes"] = piece.window_codes(np.arange(len(piece.start_s)), config=config)
                    else:
                        row["signal"] = piece.signal
                    if piece.truncated_at_s is not None:
                        row["truncated_at_s"] = piece.truncated_at_s
                if held is not None:
                    yield _piece_table(held)
                held, rows = row, rows + row["owned"]
        held["chunk_rows"] = rows
        yield _piece_table(held)


def _piece_table(row: dict) -> pa.Table:
    """One row of :func:`decode_chunk` as an Arrow table; its arrays become one-row lists without a copy."""
    def column(name: str, value):
        if isinstance(value, np.ndarray):
            flat = np.ascontiguousarray(value, PIECE_SCHEMA.field(name).type.value_type.to_pandas_dtype()).ravel()
            return pa.LargeListArray.from_arrays(pa.array([0, len(flat)], pa.int64()), pa.array(flat))
        return [value]

    return pa.table({name: column(name, row[name]) for name in PIECE_SCHEMA.names}, schema=PIECE_SCHEMA)


def _arrays(column) -> list[np.ndarray]:
    """The rows of an Arrow list column as NumPy arrays that share its memory."""
    rows = []
    for chunk in column.chunks:
        offsets, values = chunk.offsets.to_numpy(), chunk.values.to_numpy()
        rows += [values[offsets[at]:offsets[at + 1]] for at in range(len(chunk))]
    return rows


class LabelWindows:
    """The model stage: loads the model once per actor (TensorFlow on ``threads`` threads), featurizes the
    windows it reads from each piece's audio and predicts them.

    Turns each piece row of :func:`decode_chunk` into one row per window, ``signal`` and ``codes`` replaced
    with ``p_<class>`` for each content class (:func:`msc_core.labelling.class_probs`; NaN on error rows, and
    on the windows a coarse pass skipped, which are never featurized: :func:`msc_core.labelling.coarse_to_fine`).
    Pieces that come with their codes (``featurize`` in :func:`decode_chunk`) are not featurized again.
    """

    def __init__(self, model_dir: str | None, batch_size: int, view: str, threads: int | None,
                 coarse_s: float | None, precision: str):
        from msc_core.labelling import load_model

        self.model = load_model(model_dir, threads=threads, precision=precision)  # "auto": this node's CPU decides
        log.info("model actor: %s threads, %s", threads, self.model.precision)
        self.batch_size, self.view, self.coarse_s = batch_size, view, coarse_s

    def __call__(self, batch: pa.Table) -> dict:
        from msc_core.config import CLASSES
        from msc_core.labelling import FileFeatures, class_probs, coarse_to_fine

        start_s, end_s, signal, codes = (_arrays(batch[name]) for name in ("start_s", "end_s", "signal", "codes"))
        batch = {name: batch[name].to_numpy(zero_copy_only=False) for name in PIECE_SCHEMA.names
                 if name not in ("start_s", "end_s", "signal", "codes")}
        windows, owned = np.array([len(starts) for starts in start_s]), batch["owned"]
        ok = np.flatnonzero(batch["error"] == "")
        shape = (-1, *self.model.config.encoded_shape)
        pieces = [FileFeatures(batch["path"][i], start_s[i], end_s[i],
                               codes[i].reshape(shape) if len(codes[i]) else None, batch["duration_s"][i], 0, 0,
                               signal=signal[i]) for i in ok]
        first = np.concatenate([[0], np.cumsum(windows[ok])])  # of each ok piece in their windows

        def predict(positions: np.ndarray) -> np.ndarray:
            piece_of = np.searchsorted(first, positions, side="right") - 1
            codes = np.concatenate([pieces[piece].window_codes(positions[piece_of == piece] - first[piece],
                                                               config=self.model.config)
                                    for piece in np.unique(piece_of)])
            return class_probs(self.model.predict_codes(codes, batch_size=self.batch_size), self.model.labels,
                               view=self.view)

        starts, probs = np.concatenate(start_s), np.full((windows.sum(), len(CLASSES)), np.nan)
        offsets = np.cumsum(windows) - windows  # of each piece in the batch's windows
        if len(pieces):
            at = np.concatenate([np.arange(offsets[i], offsets[i] + windows[i]) for i in ok])
            probs[at] = coarse_to_fine(np.repeat(np.arange(len(pieces)), windows[ok]), starts[at], predict,
                                       coarse_s=self.coarse_s)
        kept = np.concatenate([np.arange(offset, offset + count) for offset, count in zip(offsets, owned)])
        out = {name: np.repeat(values, owned) for name, values in batch.items()
               if name not in ("row", "owned", "cues")}
        out["row"] = np.concatenate([row + np.arange(count) for row, count in zip(batch["row"], owned)])
        out["start_s"], out["end_s"] = starts[kept], np.concatenate(end_s)[kept]
        out["cues"] = np.full(len(kept), b"", object)
        out["cues"][np.cumsum(owned) - owned] = batch["cues"]
        out.update({f"p_{name}": probs[kept, column] for column, name in enumerate(CLASSES)})
        return out


class WriteChunks:
    """Aggregates each chunk once all its rows have arrived and writes its part files.

    A row delivered twice (by a retried task) is kept once. Returns one row per
    chunk written: ``chunk_id``, ``files``, ``errors``.
    """

    def __init__(self, out_dir: str, model_id: str, feature_hash: str):
        import threading

        from msc_core.storage import resolve_filesystem

        self.filesystem, self.root = resolve_filesystem(out_dir)
        self.root = self.root.rstrip("/")
        for kind in PART_KINDS:
            self.filesystem.create_dir(f"{self.root}/parts/{kind}", recursive=True)
        self.model_id, self.feature_hash = model_id, feature_hash
        self.pending: dict[str, list] = {}
        self.lock = threading.Lock()  # Ray Data may call an actor from more than one thread

    def __call__(self, batch):
        import pyarrow.compute as pc

        written = {"chunk_id": [], "files": [], "errors": [], "parts": []}
        for chunk_id in pc.unique(batch["chunk_id"]).to_pylist():
            rows = batch.filter(pc.equal(batch["chunk_id"], chunk_id))
            with self.lock:
                have = self.pending.setdefault(chunk_id, [])
                have.append(rows)
                complete = pa.concat_tables(have)
                _, first = np.unique(complete["row"].to_numpy(), return_index=True)
                expected = pc.max(complete["chunk_rows"]).as_py()  # on the chunk's last piece only
                if expected < 0 or len(first) < expected:
                    continue
                del self.pending[chunk_id]
            complete = complete.take(first)
            files, errors, parts = self._write(chunk_id, complete)
            for name, value in (("chunk_id", chunk_id), ("files", files), ("errors", errors),
                                ("parts", json.dumps(parts))):
                written[name].append(value)
        return pa.table(written, schema=pa.schema([("chunk_id", pa.string()), ("files", pa.int64()),
                                                   ("errors", pa.int64()), ("parts", pa.string())]))

    def _write(self, chunk_id: str, rows) -> tuple[int, int, list[tuple[str, int]]]:
        """Aggregate one complete chunk per file and write its parts; returns (files, errors, [(part, bytes)])."""
        from msc_core.config import CLASSES
        from msc_core.labelling import FileLabel, aggregate, label_tables
        from msc_core.segmentation import FrameCues
        from msc_core.shards import write_atomic

        probs = [f"p_{name}" for name in CLASSES]
        columns = {name: rows[name].to_numpy(zero_copy_only=False) for name in
                   ("file", "path", "start_s", "end_s", "duration_s", "truncated_at_s", "error", "cues", *probs)}
        kept = (columns["error"] != "") | ~np.isnan(columns[probs[0]])  # not the windows a coarse pass skipped
        order = np.flatnonzero(kept)[np.lexsort((columns["start_s"][kept], columns["file"][kept]))]
        columns = {name: values[order] for name, values in columns.items()}
        labels = []
        for run in np.split(np.arange(len(order)), np.flatnonzero(np.diff(columns["file"])) + 1):
            last = run[-1]  # a file's last piece holds its final fields
            path = str(columns["path"][last])
            error = next((message for message in columns["error"][run] if message), "")
            if error:  # a file may fail after some of its pieces
                labels.append(FileLabel.failed(path, str(error), model_id=self.model_id,
                                               feature_hash=self.feature_hash))
                continue
            truncated_at_s = float(columns["truncated_at_s"][last])
            cues = next((FrameCues.from_bytes(blob) for blob in columns["cues"][run] if blob), None)
            labels.append(aggregate(
                path, start_s=columns["start_s"][run], end_s=columns["end_s"][run],
                duration_s=float(columns["duration_s"][last]),
                truncated_at_s=None if np.isnan(truncated_at_s) else truncated_at_s,
                probs=np.stack([columns[name][run] for name in probs], axis=1),
                model_id=self.model_id, feature_hash=self.feature_hash, cues=cues))
        tables = dict(zip(("predictions", "windows", "segments"), label_tables(labels)))
        parts = [(part_name(kind, chunk_id), write_atomic(tables[kind], f"{self.root}/{part_name(kind, chunk_id)}",
                                                          filesystem=self.filesystem)) for kind in PART_KINDS]
        return len(labels), sum(label.status != "ok" for label in labels), parts


# ---------------------------------------------------------------------------------------- files
def part_name(kind: str, chunk_id: str) -> str:
    """Where chunk ``chunk_id``'s ``kind`` part lives, relative to the output folder."""
    return f"parts/{kind}/{chunk_id}.parquet"


def settings_of(*, model_id: str, config, coarse_s: float | None, max_windows: int, view: str,
                precision: str = "fp32") -> str:
    """What every result depends on beside its file: the model, the features, the window policy and
    coarse pass, ``--max-windows``, ``--labels`` and a ``--precision`` other than fp32."""
    # earlier outputs stay valid without a first pass or another precision
    optional = {**({} if coarse_s is None else {"coarse_s": coarse_s}),
                **({} if precision == "fp32" else {"precision": precision})}
    return json.dumps({"model_id": model_id, "feature_hash": config.hash, "window": config.window.mode,
                       "hop_seconds": config.window.hop_seconds, "max_windows": max_windows, "view": view,
                       **optional}, sort_keys=True)


def assemble(filesystem, root: str, chunks: Sequence[str], *, formats: Sequence[str], run_summary) -> None:
    """Concatenate the parts of ``chunks`` (committed, in listing order) into the final files, each atomically.

    Streams one part at a time; the predictions (assembled first) are counted into ``run_summary``
    (:class:`msc_core.report.RunSummary`), whose facts go into every Parquet file's metadata; CSVs
    get :func:`msc_core.report.csv_table` (6 significant digits).

    Raises
    ------
    CorruptShardError
        A part that cannot be read (a rerun reads every part in full and redoes the damaged ones).
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from msc_core.errors import CorruptShardError
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
                for chunk_id in chunks:
                    path = f"{root}/{part_name(kind, chunk_id)}"
                    try:
                        with filesystem.open_input_file(path) as handle:
                            table = pq.ParquetFile(handle, page_checksum_verification=True).read().cast(schema)
                    except (pa.ArrowException, OSError) as error:
                        raise CorruptShardError(f"{path}: damaged part ({error}); rerun the same command to redo "
                                                "it") from error
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
def label_chunks(pending: Sequence, *, out: str, config, coarse_s: float | None, limits, model_dir: str,
                 model_id: str, batch_size: int, view: str, precision: str, num_gpus: float,
                 isolate: bool) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Run the pipeline once over ``pending`` chunks (:class:`msc_core.engine.Chunk`) on the connected cluster.

    Yields ``(chunk id, [(part, bytes), ...])`` as each chunk's parts are
    written. Chunks whose rows were lost (a writer actor restarted after its
    node died) are simply not yielded; :func:`infer_archive` runs them again.
    """
    import ray

    resources = ray.cluster_resources()
    plan = plan_resources(node_cpus=node_cpus(), gpus=resources.get("GPU", 0), gpus_per_actor=num_gpus)
    log.info("resources %s -> %s", resources, plan)
    items = [{"chunk_id": chunk.id, "paths": [entry.path for entry in chunk.entries]} for chunk in pending]
    dataset = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(decode_chunk, batch_size=1, num_cpus=plan.task_cpus,
                     fn_kwargs={"config": config, "limits": limits, "isolate": isolate,
                                "piece_windows": piece_size(config, coarse_s), "featurize": num_gpus > 0})
        .map_batches(LabelWindows, batch_size=None, batch_format="pyarrow",
                     compute=ray.data.ActorPoolStrategy(min_size=1, initial_size=plan.actors, max_size=plan.actors),
                     num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus or None,
                     fn_constructor_kwargs={"model_dir": model_dir, "batch_size": batch_size, "view": view,
                                            "threads": plan.threads, "coarse_s": coarse_s,
                                            "precision": "fp32" if num_gpus and precision == "auto" else precision})
        .map_batches(WriteChunks, batch_size=None, batch_format="pyarrow", num_cpus=WRITER_CPUS,
                     compute=ray.data.ActorPoolStrategy(size=1),
                     fn_constructor_kwargs={"out_dir": out, "model_id": model_id, "feature_hash": config.hash})
    )
    failed = 0
    with progress(total=sum(len(chunk.entries) for chunk in pending), unit="files", desc="infer") as bar:
        for written in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            failed += sum(written["errors"].to_pylist())
            bar.set_postfix_str(f"{failed} failed", refresh=False)
            bar.update(sum(written["files"].to_pylist()))
            for chunk_id, parts in zip(written["chunk_id"].to_pylist(), written["parts"].to_pylist()):
                yield chunk_id, [tuple(part) for part in json.loads(parts)]


def infer_archive(sources: Sequence[str], *, out: str, model: str | None = None, window: str = "all",
                  hop_s: float | None = None, coarse_s: float | None = None, view: str = "all",
                  precision: str = "fp32", limits=None,
                  formats: Sequence[str] = ("parquet", "csv"),
                  batch_size: int = 32, num_gpus: float = 0.0, chunk_files: int = 8, isolate: bool = True,
                  address: str | None = None, num_cpus: int | None = None,
                  arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Label ``sources`` into ``out`` on Ray, incrementally (see the module docstring).

    Parameters
    ----------
    sources : sequence of str
        Folders, globs, file lists, audio files or URIs (:func:`msc_core.sources.iter_audio_paths`).
    out : str
        Output folder (local path or URI).
    model : str or None
        Model directory (None: the bundled model).
    window, hop_s, coarse_s
        Windows and first pass, with labelling's defaults (:func:`msc_core.labelling.labelling_windows`:
        a 1-s hop, the model every 5 s first and in between only where the content changes;
        ``windows`` holds the windows run).
    view : {"all", "binary"}
        Every content class, or the paper's speech/music view (:func:`msc_core.labelling.class_probs`).
    precision : {"auto", "fp32", "bf16"}
        The model's arithmetic (:func:`msc_core.labelling.load_model`); ``"auto"`` is decided by each
        model actor's CPU, and is float32 with GPUs.
    limits : DecodeLimits or None
    formats : sequence of {"parquet", "csv"}
        Final file formats (``windows`` is Parquet only).
    batch_size : int
        Windows per forward pass.
    num_gpus : float
        GPUs per model actor (0: CPU).
    chunk_files : int
        Files per chunk.
    isolate : bool
        Decode in supervised child processes.
    address, num_cpus
        Ray to join or start (:func:`jobs.raylib.init_ray`) when there is work to do.
    arguments : dict or None
        The command's arguments, recorded in ``summary.json``.

    Returns
    -------
    dict
        ``summary`` (the :class:`msc_core.report.RunSummary` also written to ``summary.json`` and
        ``report.html``), ``console`` (its lines for a person), ``listed``, ``duplicates`` and the
        plan's ``new``, ``changed``, ``deleted``, ``unchanged``, ``repaired``.

    Raises
    ------
    InputError, ParameterError
        Bad options, an empty listing or bad sources (nothing is changed).
    StorageFullError
        The output ran out of space; the last committed snapshot is intact.
    """
    import ray

    from msc_core.audio import DecodeLimits
    from msc_core.engine import Run, is_disk_full, list_entries
    from msc_core.errors import InputError, MscError, StorageFullError
    from msc_core.labelling import check_model, labelling_windows, model_location
    from msc_core.model import resolve_precision
    from msc_core.report import RunSummary, finish_run
    from msc_core.sources import iter_audio_paths, unlabelled_item
    from msc_core.storage import require_output_dir, resolve_filesystem

    if not formats or set(formats) - {"parquet", "csv"}:
        raise InputError(f"formats are parquet and/or csv, not {','.join(formats)!r}")
    if view not in ("all", "binary"):
        raise InputError(f"labels are 'all' or 'binary', not {view!r}")
    resolve_precision(precision)  # refuses an unknown one before Ray starts
    if chunk_files < 1 or batch_size < 1:
        raise InputError("--chunk-files and --batch-size must be at least 1")
    require_output_dir(out)
    run_summary = RunSummary("infer", arguments=dict(arguments or {}))
    try:
        config, coarse_s = labelling_windows(window, hop_s, coarse_s)
    except ValueError as error:
        raise InputError(str(error)) from error
    limits = limits or DecodeLimits()
    model_id = check_model(model)["model_id"]  # refuses a bad model before any work; the actors load it
    model_dir = str(model_location(model))
    run_summary.model_id, run_summary.feature_hash = model_id, config.hash
    run_summary.mark("loading")
    listing = list_entries((unlabelled_item(path) for path in iter_audio_paths(sources)), sources=sources)
    filesystem, root = resolve_filesystem(out)
    root = root.rstrip("/")
    run = Run(out, listing=listing, settings=settings_of(model_id=model_id, config=config, coarse_s=coarse_s,
                                                         max_windows=limits.max_windows, view=view,
                                                         precision=precision),
              files_per_chunk=chunk_files, part_folders=[f"parts/{kind}" for kind in PART_KINDS],
              every_chunks=COMMIT_EVERY_CHUNKS, verify=True)  # parts are small: read each in full
    log.info("%d chunks already labelled, %d to do", len(run.plan.kept), len(run.plan.chunks))
    run_summary.mark("listing")
    pending = {chunk.id: chunk for chunk in run.plan.chunks}
    for attempt in range(PIPELINE_ATTEMPTS):
        if not pending:
            break
        init_ray(address, num_cpus=num_cpus)
        try:
            for chunk_id, parts in label_chunks(list(pending.values()), out=out, config=config, coarse_s=coarse_s,
                                                limits=limits,
                                                model_dir=model_dir, model_id=model_id, batch_size=batch_size,
                                                view=view, precision=precision, num_gpus=num_gpus,
                                                isolate=isolate):
                run.done(pending.pop(chunk_id), parts=parts)
        except ray.exceptions.RayError as error:  # e.g. a node lost with the only copy of a block
            if is_disk_full(error):
                run.committer.flush()
                raise StorageFullError(f"no space left on device writing {out}; the last committed snapshot is "
                                       "intact (free some space and rerun the same command to go on)") from None
            log.warning("attempt %d of %d failed: %s", attempt + 1, PIPELINE_ATTEMPTS, str(error).splitlines()[0])
    if pending:
        run.committer.flush()
        raise MscError(f"{len(pending)} chunks have no output; rerun the same command to finish them")
    run_summary.mark("labelling")
    records = run.finish()
    assemble(filesystem, root, run.order(records), formats=formats, run_summary=run_summary)
    run_summary.mark("assembling")
    counts = run.plan.counts()
    changes = "" if counts["new"] == len(listing.entries) else " ({})".format(", ".join(  # said on reruns only
        f"{counts[name]} {name}" for name in ("new", "changed", "deleted", "unchanged", "repaired")))
    return {"summary": run_summary, "console": finish_run(out, run_summary, note=changes),
            "listed": len(listing.entries), "duplicates": listing.duplicates, **counts}


def run(args: argparse.Namespace) -> int:
    """Run ``msc infer`` from parsed arguments; returns the exit code (0 all labelled, 1 some files failed)."""
    formats = [name.strip() for name in args.format.split(",") if name.strip()]
    labelling_windows(args)  # refuses bad window options with the CLI's words
    from msc_core.report import arguments_of

    result = infer_archive(args.sources, out=args.out, model=args.model, window=args.window, hop_s=args.hop,
                           coarse_s=args.coarse, view=args.view, precision=args.precision,
                           limits=decode_limits(args), formats=formats,
                           batch_size=args.batch_size, num_gpus=args.num_gpus, chunk_files=args.chunk_files,
                           isolate=not args.no_isolation,
                           address=args.address, num_cpus=args.num_cpus, arguments=arguments_of(args))
    line, *details = result["console"]
    summary(line)
    if details and level() >= NORMAL:  # the first failed files by name, where the rest and the report are
        print("\n".join(details), file=sys.stderr, flush=True)
    return 1 if result["summary"].failures else 0


if __name__ == "__main__":
    import sys

    from jobs.cli import main

    sys.exit(main(["infer", *sys.argv[1:]]))
