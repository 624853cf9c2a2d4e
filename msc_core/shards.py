"""The shard format: Parquet files of compact depth-layer windows, one row per window.

Schema (:data:`SHARD_SCHEMA`)::

    id           string   stable window id: window_id(path, window)
    path         string   source file (as listed: local path or URI)
    label        string   "music" | "speech" | null (unlabelled)
    group        string   unit that never straddles splits (speaker, track, file)
    genre        string   finer class when the layout gives one (GTZAN genre), else null
    split        string   "train" | "val" | "test" | null
    window       int32    window index within the file
    start_s      float64  window start in the file (s)
    duration_s   float64  seconds of real audio in the window (rest is padding)
    sample_rate  int32    the file's original rate (Hz)
    channels     int16    the file's original channel count
    codes        fixed_size_binary[n_mels * frames]  colormap indices, uint8, row-major (mel, time)
    feature_hash string   FeatureConfig.hash of the codes

File metadata: ``msc.feature_config`` (FeatureConfig.to_json()) and ``msc.version``.
Files are written under a temporary name and renamed, so a shard that exists
under its final name is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from typing import Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .config import LABELS, FeatureConfig, msc_version
from .errors import CorruptShardError, FeatureConfigMismatchError, InputError
from .storage import is_uri, resolve_filesystem, uri_prefix

SHARDS_DIR = "shards"
"""Folder of a featurize output that holds the shards."""
CONFIG_KEY = b"msc.feature_config"
VERSION_KEY = b"msc.version"


def shard_schema(config: FeatureConfig) -> pa.Schema:
    """The Arrow schema of shards made with ``config``, its metadata included."""
    fields = [
        ("id", pa.string()), ("path", pa.string()), ("label", pa.string()), ("group", pa.string()),
        ("genre", pa.string()), ("split", pa.string()), ("window", pa.int32()), ("start_s", pa.float64()),
        ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int16()),
        ("codes", pa.binary(config.n_mels * config.frames)), ("feature_hash", pa.string()),
    ]
    return pa.schema(fields, metadata={CONFIG_KEY: config.to_json().encode(), VERSION_KEY: msc_version().encode()})


def window_id(path: str, window: int) -> str:
    """Stable id of window ``window`` of ``path``: 16 hex digits of its path hash, then the index."""
    return f"{hashlib.sha1(path.encode()).hexdigest()[:16]}-{window:06d}"


def codes_to_arrow(codes: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Wrap uint8 codes of shape (B, n_mels, frames) as a fixed-size binary array, without copying."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    width = int(np.prod(codes.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(codes), [None, pa.py_buffer(codes)])


def codes_from_arrow(column: pa.Array | pa.ChunkedArray, config: FeatureConfig) -> np.ndarray:
    """uint8 codes of shape (B, n_mels, frames) from a ``codes`` column (zero-copy for one chunk)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.null_count:
        raise InputError("codes column holds nulls")
    width = config.n_mels * config.frames
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * width
    return data[start:start + len(column) * width].reshape(len(column), config.n_mels, config.frames)


def windows_table(config: FeatureConfig, *, codes: np.ndarray, columns: Mapping[str, Sequence]) -> pa.Table:
    """A shard table from codes (B, n_mels, frames) and the other columns (each of length B).

    ``id`` and ``feature_hash`` are filled in here when absent.
    """
    schema = shard_schema(config)
    rows = len(codes)
    data = dict(columns)
    data.setdefault("id", [window_id(p, int(w)) for p, w in zip(data["path"], data["window"])])
    data["feature_hash"] = [config.hash] * rows
    for optional in ("label", "group", "genre", "split"):
        data.setdefault(optional, [None] * rows)
    arrays = [codes_to_arrow(codes) if f.name == "codes" else pa.array(data[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


@contextlib.contextmanager
def atomic_output(path: str, *, filesystem: pafs.FileSystem | None = None) -> Iterator[pa.NativeFile]:
    """An output stream whose bytes appear under ``path`` only once it is complete.

    Writes ``<path>.tmp-<random>`` and renames it on success (on object stores,
    whose uploads become visible only when complete, the move is a copy); on
    any failure the temporary file is deleted and the error re-raised.
    """
    if filesystem is None:
        filesystem, path = resolve_filesystem(path)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with filesystem.open_output_stream(temporary) as sink:
            yield sink
        filesystem.move(temporary, path)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except OSError:
            pass
        raise


def write_atomic(table: pa.Table, path: str, *, filesystem: pafs.FileSystem | None = None,
                 compression: str = "zstd", compression_level: int | None = 1, row_group_rows: int = 1024) -> int:
    """Write ``table`` as Parquet to ``path`` through :func:`atomic_output`; returns the file's size in bytes.

    The ``codes`` column is written plain (no dictionary, no statistics): zstd
    level 1 stores a window in about 22 KB for about 0.1 ms, against about
    27 ms to featurize it. Row groups of ``row_group_rows`` windows (about 28 MB)
    bound a reader's memory. Every data page carries a CRC checksum, which
    :func:`iter_batches` verifies, so a flipped bit is an error, not other features.
    """
    small_columns = [name for name in table.column_names if name != "codes"]
    with atomic_output(path, filesystem=filesystem) as sink:
        pq.write_table(table, sink, compression=compression, compression_level=compression_level,
                       row_group_size=row_group_rows, use_dictionary=small_columns,
                       write_statistics=small_columns, write_page_checksum=True)
        return sink.tell()


class ShardWriter:
    """Collects whole files' windows and writes a shard whenever ``shard_bytes`` of codes are pending.

    Shards are named ``<prefix>-<n>.parquet`` (n = 000, 001, ...) in
    ``folder`` and written with :func:`write_atomic`; :attr:`written` lists
    ``(name, bytes)`` of each. A file's windows never straddle two shards, so
    a worker holds at most ``shard_bytes`` plus one file's codes.

    Parameters
    ----------
    folder : str
        Local folder or URI prefix.
    prefix : str
    config : FeatureConfig
    shard_bytes : int
        Most bytes of codes per shard.
    """

    def __init__(self, folder: str, *, prefix: str, config: FeatureConfig, shard_bytes: int):
        self.folder, self.prefix, self.config, self.shard_bytes = folder.rstrip("/"), prefix, config, shard_bytes
        self.written: list[tuple[str, int]] = []
        self._columns: list[Mapping[str, Sequence]] = []
        self._codes: list[np.ndarray] = []
        self._bytes = 0

    def add(self, columns: Mapping[str, Sequence], codes: np.ndarray) -> None:
        """Queue one file's windows: ``codes`` uint8 (W, n_mels, frames) and the other columns (each of length W)."""
        if self._bytes and self._bytes + codes.nbytes > self.shard_bytes:
            self._flush()
        self._columns.append(columns)
        self._codes.append(codes)
        self._bytes += codes.nbytes

    def close(self) -> None:
        """Write what is still queued."""
        if self._codes:
            self._flush()

    def _flush(self) -> None:
        merged = {name: [value for part in self._columns for value in part[name]] for name in self._columns[0]}
        table = windows_table(self.config, codes=np.concatenate(self._codes), columns=merged)
        name = f"{self.prefix}-{len(self.written):03d}.parquet"
        self.written.append((name, write_atomic(table, f"{self.folder}/{name}")))
        self._columns, self._codes, self._bytes = [], [], 0


def parquet_problem(path: str) -> str | None:
    """Why the Parquet file at ``path`` does not read back in full with its page checksums, or None.

    Reads every page: what a file of the right size that has a flipped bit needs
    (:class:`msc_core.engine.Run` with ``verify=True``).
    """
    filesystem, inner = resolve_filesystem(path)
    try:
        with filesystem.open_input_file(inner) as handle:
            reader = pq.ParquetFile(handle, page_checksum_verification=True)
            for _ in reader.iter_batches(batch_size=4096):
                pass
    except (pa.ArrowException, OSError) as error:
        return str(error)
    return None


def read_feature_config(path: str, *, filesystem: pafs.FileSystem | None = None) -> FeatureConfig:
    """The FeatureConfig stored in one shard's Parquet metadata."""
    if filesystem is None:
        filesystem, path = resolve_filesystem(path)
    try:
        schema = pq.read_schema(path, filesystem=filesystem)
    except (pa.ArrowException, OSError) as error:
        raise CorruptShardError(f"{path}: unreadable shard ({error})") from error
    stored = (schema.metadata or {}).get(CONFIG_KEY)
    if stored is None:
        raise FeatureConfigMismatchError(f"{path}: not an msc shard (no {CONFIG_KEY.decode()} metadata)")
    return FeatureConfig.from_json(stored)


def iter_batches(paths: Sequence[str], config: FeatureConfig, *, columns: Sequence[str] = ("codes", "label"),
                 batch_rows: int = 256, filter_split: str | None = None,
                 filesystem: pafs.FileSystem | None = None) -> Iterator[pa.RecordBatch]:
    """Stream record batches of ``columns`` from shard files, checking each file's feature config.

    Memory is bounded by ``batch_rows`` rows (plus one Parquet row group).
    """
    for path in paths:
        fs, inner = (filesystem, path) if filesystem else resolve_filesystem(path)
        found = read_feature_config(inner, filesystem=fs)
        if found.hash != config.hash:
            raise FeatureConfigMismatchError(f"{path}: shard features {found.hash} differ from {config.hash}")
        wanted = list(dict.fromkeys([*columns, *(["split"] if filter_split else [])]))
        with fs.open_input_file(inner) as handle:
            try:
                reader = pq.ParquetFile(handle, page_checksum_verification=True)
                for batch in reader.iter_batches(batch_size=batch_rows, columns=wanted):
                    if filter_split is not None:
                        batch = batch.filter(pc.equal(batch.column("split"), filter_split))
                    if batch.num_rows:
                        yield batch.select(list(columns))
            except (pa.ArrowException, OSError) as error:
                raise CorruptShardError(f"{path}: damaged shard ({error}); rerun msc featurize with the same "
                                        "--out and --verify to redo it") from error


def list_shards(source: str | Sequence[str]) -> list[str]:
    """Shard files of a featurize output folder, a folder of shards, or a list.

    A featurize output folder gives the shards of its last committed snapshot
    (:class:`msc_core.engine.FileRecords`), never files of a run in progress or
    killed; a plain folder gives its ``shards/*.parquet`` or ``*.parquet``.

    Parameters
    ----------
    source : str or sequence of str
        A local folder or URI prefix, or shard paths. Local paths come back
        absolute, so they still hold in Ray workers with another working directory.

    Raises
    ------
    InputError
        A folder that holds no shards.
    """
    from .engine import FileRecords, committed_parts

    if not isinstance(source, str):
        return [path if is_uri(path) else os.path.abspath(path) for path in source]
    if not is_uri(source):
        source = os.path.abspath(source)
    if source.endswith(".parquet"):
        return [source]
    records = FileRecords(source)
    if records.version() is not None:  # a featurize output: its last committed snapshot
        found = sorted(name for name in committed_parts(records.read(["parts"])) if name.startswith(f"{SHARDS_DIR}/"))
        if not found:
            raise InputError(f"{source}: its last committed snapshot holds no shards")
        return [f"{source.rstrip('/')}/{name}" for name in found]
    filesystem, inner = resolve_filesystem(source)
    prefix = uri_prefix(source)
    for folder in (f"{inner.rstrip('/')}/shards", inner.rstrip("/")):
        selector = pafs.FileSelector(folder, allow_not_found=True)
        found = sorted(info.path for info in filesystem.get_file_info(selector)
                       if info.type == pafs.FileType.File and info.path.endswith(".parquet")
                       and os.path.basename(info.path) != "errors.parquet")
        if found:
            return [prefix + path for path in found]
    raise InputError(f"{source}: no shards (*.parquet) found")


def labelled(batch: pa.RecordBatch, classes: Sequence[str], *, where: str) -> tuple[pa.RecordBatch, np.ndarray]:
    """The rows of ``batch`` that have a label, and their labels' indices into ``classes`` (int32 (rows,)).

    Raises
    ------
    InputError
        A label outside ``classes`` (``where`` names the data in the message).
    """
    batch = batch.filter(pc.is_valid(batch.column("label")))
    index = pc.index_in(batch.column("label"), value_set=pa.array(list(classes)))
    if index.null_count:
        raise InputError(f"labels outside {list(classes)} in {where}")
    return batch, index.to_numpy().astype(np.int32)


def tf_dataset(paths: str | Sequence[str], config: FeatureConfig, *, split: str | None = None, batch_size: int = 8,
               classes: Sequence[str] = LABELS, dense: bool = False, shuffle_seed: int | None = None,
               shuffle_buffer: int = 1024, interleave_files: int = 8):
    """A ``tf.data.Dataset`` of labelled windows streamed from shards.

    Unlabelled rows are skipped. Memory stays bounded: shards are read in
    record batches, at most ``interleave_files`` shards are open at once and at
    most ``shuffle_buffer`` windows wait in the shuffle.

    Parameters
    ----------
    paths : str or sequence of str
        Featurize output folder, folder of shards, or shard paths (see :func:`list_shards`).
    config : FeatureConfig
        Every shard's feature hash must match it.
    split : {"train", "val", "test"} or None
        Keep only rows of this split (None: all).
    batch_size : int
    classes : sequence of str
        The model's classes: a label's index in it is the label given; rows of
        other labels are an error.
    dense : bool
        False: codes, uint8 (B, n_mels, frames). True: the exact float32 model
        input (B, layers, n_mels, frames, 1) rebuilt with :func:`~msc_core.depth.decode_tf`.
    shuffle_seed : int or None
        None: file order, no shuffle. Otherwise files are visited in a seeded
        random order, windows of ``interleave_files`` files are interleaved one
        by one (shards hold runs of one source or class, which a shuffle buffer
        alone would not mix), then shuffled in a buffer of ``shuffle_buffer``.
    shuffle_buffer : int
        Windows held by the shuffle (about 27.5 KB each).
    interleave_files : int
        Shards read at once when shuffling.

    Returns
    -------
    tf.data.Dataset
        Elements ``(features, label)``; ``label`` int32 (B,), an index into ``classes``.
    """
    import tensorflow as tf

    from .depth import decode_tf

    files = list_shards(paths)
    if shuffle_seed is not None:
        files = [files[i] for i in np.random.default_rng(shuffle_seed).permutation(len(files))]

    def generate(path: bytes) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in iter_batches([path.decode()], config, columns=("codes", "label"), filter_split=split,
                                  batch_rows=64):
            batch, labels = labelled(batch, classes, where=path.decode())
            if batch.num_rows:
                yield codes_from_arrow(batch.column("codes"), config), labels

    signature = (tf.TensorSpec((None, *config.encoded_shape), tf.uint8), tf.TensorSpec((None,), tf.int32))

    def read_file(path):
        return tf.data.Dataset.from_generator(generate, args=(path,), output_signature=signature).unbatch()

    cycle = 1 if shuffle_seed is None else max(1, min(interleave_files, len(files)))
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string)).interleave(
        read_file, cycle_length=cycle, block_length=1)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if dense:
        dataset = dataset.map(lambda codes, label: (decode_tf(codes, config), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)

