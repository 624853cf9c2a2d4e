"""What a labelling run did, in files people read: ``summary.json``, ``report.html`` and tidy CSVs.

- :class:`RunSummary` gathers the facts of one ``msc infer`` run as its
  predictions stream past (arguments, model, msc version, timings, counts per
  class and status, hours, a confidence histogram, the first failed files).
  Its :meth:`~RunSummary.parquet_metadata` goes into the file metadata of the
  Parquet outputs under :data:`METADATA_KEY`, :func:`finish_run` writes it as
  ``summary.json`` and :meth:`~RunSummary.console_lines` says it in a few lines.
- :func:`csv_table` prepares a table for CSV: floats to 6 significant digits,
  always written with a decimal point so that readers type them as floats.
- :func:`write_report` writes ``report.html``: one self-contained page (images
  are data URIs, no script, nothing fetched) with totals per class, the
  confidence distribution, the failed files and their reasons, the least
  certain files and a timeline strip per file for a bounded sample of files
  and for the files a pattern picks. Everything on it is bounded, so the page
  of a 100,000-file archive is as small as that of a 10-file one; the
  aggregates stream over every row.
- :func:`model_facts` and :func:`model_info_lines`: what a model directory is.

Classes are whatever labels the data holds: known ones have fixed colours
(:data:`KNOWN_COLOURS`), any other label gets the next free colour.
"""

from __future__ import annotations

import base64
import fnmatch
import heapq
import html
import io
import json
import math
import os
import re
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import msc_version
from .errors import InputError, ParameterError

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
METADATA_KEY = "msc.summary"
"""Key of the run summary (JSON) in the file metadata of ``predictions``, ``windows`` and ``segments.parquet``."""
LISTED_FAILURES = 1000
"""Failed files named in a summary; the full list is the ``status = 'error'`` rows of ``predictions``."""
CONFIDENCE_BINS = 20
"""Equal-width bins over [0, 1] of the confidence histogram."""
KNOWN_COLOURS = {"speech": "tab:orange", "music": "tab:blue", "silence": "lightgrey",
                 "speech_over_music": "tab:purple", "noise": "tab:brown"}
"""Fixed colours of the labels msc knows; other labels take :data:`SPARE_COLOURS` in name order."""
SPARE_COLOURS = ("tab:green", "tab:red", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy",
                 "teal", "maroon")
REPORT_LIMITS = {"failed": 50, "reasons": 10, "uncertain": 20, "sample": 12, "matched": 100}
"""How many rows or files each part of the report shows at most (``sample``: the default timeline sample)."""
TIMELINES_PER_FIGURE = 25
_PREDICTION_COLUMNS = ("path", "label", "confidence", "duration_s", "status", "error", "truncated", "model_id",
                       "feature_hash")


# ---------------------------------------------------------------------------------------- summary
@dataclass
class RunSummary:
    """The facts of one labelling run, filled in as its predictions stream past.

    Attributes
    ----------
    command : str
        ``"infer"``, or ``"report"`` for a summary rebuilt from the outputs alone.
    arguments : dict
        The command's arguments (JSON-ready).
    model_id, feature_hash : str
    msc_version : str
    started_at : str
        ISO 8601 UTC.
    timings_s : dict of str to float
        Seconds per phase, in order (see :meth:`mark`), and ``total``.
    files : int
        Rows seen (one per input file).
    by_status, by_label : dict of str to int
        Files per status, and ok files per label.
    hours_by_label : dict of str to float
        Duration of the ok files of each label (hours).
    truncated : int
        Files labelled from their first windows only.
    confidence_histogram : dict of str to list of int
        Per label, ok files per :data:`CONFIDENCE_BINS` bin of confidence.
    failed : list of dict
        ``{"path", "error"}`` of the first :data:`LISTED_FAILURES` failed files.
    """

    command: str
    arguments: dict = field(default_factory=dict)
    model_id: str = ""
    feature_hash: str = ""
    msc_version: str = field(default_factory=msc_version)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    timings_s: dict = field(default_factory=dict)
    files: int = 0
    by_status: dict = field(default_factory=dict)
    by_label: dict = field(default_factory=dict)
    hours_by_label: dict = field(default_factory=dict)
    truncated: int = 0
    confidence_histogram: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    _clock: float = field(default_factory=time.monotonic, repr=False, compare=False)

    def mark(self, phase: str) -> None:
        """Record the seconds since the previous mark (or the start) as ``timings_s[phase]``, and the total."""
        now = time.monotonic()
        self.timings_s.pop("total", None)
        self.timings_s[phase] = round(now - self._clock, 3)
        self.timings_s["total"] = round(sum(self.timings_s.values()), 3)
        self._clock = now

    def add(self, predictions: pa.Table) -> None:
        """Count some ``predictions`` rows (:data:`~msc_core.labelling.PREDICTIONS_SCHEMA` columns)."""
        self.files += predictions.num_rows
        for status, count in _value_counts(predictions["status"]).items():
            self.by_status[status] = self.by_status.get(status, 0) + count
        self.truncated += int(pc.sum(pc.fill_null(predictions["truncated"], False)).as_py() or 0)
        if not self.model_id and predictions.num_rows:
            self.model_id, self.feature_hash = (predictions[name][0].as_py() or "" for name in
                                                ("model_id", "feature_hash"))
        ok = predictions.filter(pc.equal(predictions["status"], "ok"))
        edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
        for label, count in _value_counts(ok["label"]).items():
            rows = ok.filter(pc.equal(ok["label"], label))
            self.by_label[label] = self.by_label.get(label, 0) + count
            self.hours_by_label[label] = self.hours_by_label.get(label, 0.0) + \
                float(pc.sum(rows["duration_s"]).as_py() or 0.0) / 3600
            counts, _ = np.histogram(np.clip(rows["confidence"].to_numpy(zero_copy_only=False), 0, 1), edges)
            before = self.confidence_histogram.get(label, [0] * CONFIDENCE_BINS)
            self.confidence_histogram[label] = [int(a + b) for a, b in zip(before, counts)]
        room = LISTED_FAILURES - len(self.failed)
        if room > 0:
            failed = predictions.filter(pc.not_equal(predictions["status"], "ok")).slice(0, room)
            self.failed += [{"path": path, "error": error} for path, error in
                            zip(failed["path"].to_pylist(), failed["error"].to_pylist())]

    @property
    def failures(self) -> int:
        """Files that did not get a label."""
        return self.files - self.by_status.get("ok", 0)

    def to_dict(self) -> dict:
        """The JSON-ready content of ``summary.json``."""
        facts = {name: value for name, value in asdict(self).items() if not name.startswith("_")}
        facts["by_label"] = dict(sorted(self.by_label.items()))
        facts["hours_by_label"] = {label: round(hours, 6) for label, hours in sorted(self.hours_by_label.items())}
        facts["confidence_bins"] = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1).round(6).tolist()
        facts["failed_listed"] = f"the first {LISTED_FAILURES}; every one is a row with status = 'error' in predictions"
        return facts

    @classmethod
    def from_dict(cls, facts: Mapping[str, Any]) -> "RunSummary":
        """A summary read back from ``summary.json``."""
        names = {name for name in cls.__dataclass_fields__ if not name.startswith("_")}
        return cls(**{name: value for name, value in facts.items() if name in names})

    def parquet_metadata(self) -> dict[str, str]:
        """File metadata for the Parquet outputs: :data:`METADATA_KEY` -> the summary as JSON."""
        return {METADATA_KEY: json.dumps(self.to_dict(), default=str)}

    def console_lines(self, out: str, *, first: int = 5, note: str = "") -> list[str]:
        """What a person reads at the end of a run: counts, the first failed files by name, where the rest are.

        ``note`` follows the counts on the first line (e.g. what a rerun found changed).
        """
        labels = ", ".join(f"{count} {label}" for label, count in sorted(self.by_label.items()))
        lines = [f"msc {self.command}: {self.files} files, {self.by_status.get('ok', 0)} ok ({labels or 'none'}), "
                 f"{self.failures} failed{note}; results in {out}"]
        if self.failures:
            shown = self.failed[:first]
            lines.append(f"failed ({len(shown)} of {self.failures} shown):")
            lines += [f"  {row['path']}: {row['error']}" for row in shown]
            lines.append(f"every failed file: rows with status=error in {_join(out, 'predictions.*')}"
                         + (f", also listed in {_join(out, SUMMARY_FILE)}" if self.failures <= LISTED_FAILURES else ""))
        lines.append(f"report: {_join(out, REPORT_FILE)}")
        return lines


def _value_counts(column: pa.ChunkedArray) -> dict[str, int]:
    """Non-null value -> count."""
    counts = pc.value_counts(column.drop_null())
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def arguments_of(args: Any) -> dict:
    """The JSON-ready arguments of an argparse namespace (callables dropped, other objects as strings)."""
    return json.loads(json.dumps({name: value for name, value in vars(args).items() if not callable(value)},
                                 default=str))


# ---------------------------------------------------------------------------------------- CSV
def round_significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (float64, same shape; 0, NaN and inf kept).

    Each result is the double nearest to the decimal with that many digits, so
    it prints as that decimal (``0.123456789`` -> ``0.123457``).
    """
    values = np.asarray(values, np.float64)
    out = values.copy()
    finite = np.isfinite(values) & (values != 0)
    shown = values[finite]
    exponent = digits - 1 - np.floor(np.log10(np.abs(shown))).astype(np.int64)
    scale = 10.0 ** np.abs(exponent)  # exact up to 1e22: both branches divide or multiply by an exact power
    up = exponent >= 0
    out[finite] = np.where(up, np.round(shown * scale) / scale, np.round(shown / scale) * scale)
    return out


def csv_table(table: pa.Table, *, digits: int = 6) -> pa.Table:
    """``table`` ready for a CSV file: every float column as text with ``digits`` significant digits.

    Whole numbers keep a decimal point (``12.0``, not ``12``), so that DuckDB
    and pandas type the column as a float, not an integer; nulls stay empty.
    A column that is null in every row has no value to type it by: DuckDB
    reads it as VARCHAR (pandas as float64), so read the Parquet, or give
    DuckDB ``types={'truncated_at_s': 'DOUBLE'}``.
    """
    columns = []
    for column, column_field in zip(table.columns, table.schema):
        if pa.types.is_floating(column_field.type):
            rounded = round_significant(column.to_numpy(zero_copy_only=False), digits)
            text = pc.cast(pa.array(rounded, mask=column.is_null().to_numpy(zero_copy_only=False)), pa.string())
            whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
            column = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def csv_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of :func:`csv_table`'s output for tables of ``schema``."""
    return pa.schema([pa.field(column.name, pa.string()) if pa.types.is_floating(column.type) else column
                      for column in schema])


# ---------------------------------------------------------------------------------------- run end
def finish_run(out: str, summary: RunSummary, *, files: str | None = None, note: str = "") -> list[str]:
    """Write ``summary.json`` and ``report.html`` into the output directory ``out``; return the console lines.

    Parameters
    ----------
    out : str
        The run's output directory (local path or URI) holding its final files.
    summary : RunSummary
        The run's facts, complete.
    files : str or None
        Glob over paths: files whose timelines the report shows besides its sample.
    note : str
        Added to the first console line (:meth:`RunSummary.console_lines`).
    """
    from .shards import atomic_output, resolve_filesystem

    filesystem, root = resolve_filesystem(out)
    with atomic_output(_join(root, SUMMARY_FILE), filesystem=filesystem) as sink:
        sink.write(json.dumps(summary.to_dict(), indent=1, default=str).encode())
    write_report(out, summary=summary, files=files)
    return summary.console_lines(out, note=note)


def read_summary(out: str) -> RunSummary:
    """The run summary of an output directory: its ``summary.json``, else rebuilt from its predictions.

    Raises
    ------
    InputError
        ``out`` holds no predictions (neither Parquet nor CSV).
    """
    import pyarrow.fs as pafs

    from .shards import resolve_filesystem

    filesystem, root = resolve_filesystem(out)
    path = _join(root, SUMMARY_FILE)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        with filesystem.open_input_stream(path) as handle:
            return RunSummary.from_dict(json.loads(handle.read()))
    summary = RunSummary("report", model_id="", feature_hash="", msc_version="", started_at="")
    for batch in iter_output(out, "predictions", _PREDICTION_COLUMNS):
        summary.add(pa.Table.from_batches([batch]))
    return summary


def iter_output(out: str, kind: str, columns: Sequence[str], *, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
    """Stream ``columns`` of an output table (``predictions`` or ``segments``) of ``out``: Parquet, else CSV.

    Raises
    ------
    InputError
        Neither ``kind.parquet`` nor ``kind.csv`` is there.
    """
    import pyarrow.csv as pacsv
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from .labelling import PREDICTIONS_SCHEMA, SEGMENTS_SCHEMA
    from .shards import resolve_filesystem

    filesystem, root = resolve_filesystem(out)
    schema = {"predictions": PREDICTIONS_SCHEMA, "segments": SEGMENTS_SCHEMA}[kind]
    parquet, csv = _join(root, f"{kind}.parquet"), _join(root, f"{kind}.csv")
    if filesystem.get_file_info(parquet).type == pafs.FileType.File:
        with filesystem.open_input_file(parquet) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=list(columns))
    elif filesystem.get_file_info(csv).type == pafs.FileType.File:
        types = {name: schema.field(name).type for name in schema.names}
        with filesystem.open_input_stream(csv) as handle:
            reader = pacsv.open_csv(handle, convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(columns), strings_can_be_null=True))
            yield from reader
    else:
        raise InputError(f"{out} holds no {kind}.parquet or {kind}.csv: is it an msc infer output directory?")


# ---------------------------------------------------------------------------------------- report data
@dataclass
class ReportData:
    """What the report shows beyond the summary, gathered in one streaming pass over the predictions.

    Attributes
    ----------
    uncertain : list of dict
        The least confident ok files (``path, label, confidence, duration_s``), lowest first.
    reasons : list of tuple of (str, int)
        The most common failure reasons with their counts.
    failed : list of dict
        The first failed files (``path, error``).
    sample : list of dict
        A stable pseudo-random sample of ok files (the smallest CRC-32 of the path), in path order.
    matched : list of dict
        Ok files whose path matches the user's pattern, the first :data:`REPORT_LIMITS` ``["matched"]``.
    matched_total : int
        How many ok files the pattern matched in all.
    """

    uncertain: list
    reasons: list
    failed: list
    sample: list
    matched: list
    matched_total: int


def gather_report_data(out: str, *, files: str | None = None, sample: int = REPORT_LIMITS["sample"]) -> ReportData:
    """Stream the predictions of ``out`` once and keep only what the report shows (bounded memory).

    Parameters
    ----------
    out : str
        Output directory of ``msc infer``.
    files : str or None
        Glob over full paths (``*`` crosses ``/``), e.g. ``"*/interviews/*"``.
    sample : int
        Files in the timeline sample.
    """
    pattern = re.compile(fnmatch.translate(files)) if files else None
    uncertain, sampled, failed, matched, matched_total = [], [], [], [], 0
    reasons: Counter = Counter()
    columns = ("path", "label", "confidence", "duration_s", "status", "error")
    for batch in iter_output(out, "predictions", columns):
        ok = []
        for row in batch.to_pylist():
            if row["status"] == "ok":
                ok.append(row)
                continue
            reasons[row["error"] or "(no reason given)"] += 1
            if len(failed) < REPORT_LIMITS["failed"]:
                failed.append({"path": row["path"], "error": row["error"]})
        uncertain = heapq.nsmallest(REPORT_LIMITS["uncertain"], uncertain + ok,
                                    key=lambda row: (row["confidence"], row["path"]))
        sampled = heapq.nsmallest(sample, sampled + ok, key=lambda row: (zlib.crc32(row["path"].encode()), row["path"]))
        if pattern is not None:
            hits = [row for row in ok if pattern.match(row["path"])]
            matched_total += len(hits)
            matched += hits[:REPORT_LIMITS["matched"] - len(matched)]
    return ReportData(uncertain=uncertain, reasons=reasons.most_common(REPORT_LIMITS["reasons"]), failed=failed,
                      sample=sorted(sampled, key=lambda row: row["path"]), matched=matched,
                      matched_total=matched_total)


def segments_of_files(out: str, paths: Iterable[str]) -> dict[str, pa.Table]:
    """The segments (``start_s, end_s, label``) of each of ``paths``, read from ``out``'s segments table."""
    wanted = pa.array(sorted(set(paths)), pa.string())
    found: dict[str, list] = {}
    for batch in iter_output(out, "segments", ("path", "start_s", "end_s", "label")):
        table = pa.Table.from_batches([batch])
        table = table.filter(pc.is_in(table["path"], wanted))
        for path in pc.unique(table["path"]).to_pylist():
            found.setdefault(path, []).append(table.filter(pc.equal(table["path"], path)))
    return {path: pa.concat_tables(parts) for path, parts in found.items()}


def segment_hours(out: str) -> dict[str, float]:
    """Hours of audio per segment label over every file of ``out`` (streamed)."""
    hours: dict[str, float] = {}
    for batch in iter_output(out, "segments", ("start_s", "end_s", "label")):
        lengths = pc.subtract(batch["end_s"], batch["start_s"])
        grouped = pa.table({"label": batch["label"], "seconds": lengths}).group_by("label").aggregate(
            [("seconds", "sum")])
        for label, seconds in zip(grouped["label"].to_pylist(), grouped["seconds_sum"].to_pylist()):
            hours[label] = hours.get(label, 0.0) + (seconds or 0.0) / 3600
    return hours


# ---------------------------------------------------------------------------------------- pictures
def label_colours(labels: Iterable[str]) -> dict[str, str]:
    """A matplotlib colour per label: :data:`KNOWN_COLOURS`, then :data:`SPARE_COLOURS` in name order."""
    labels = sorted(set(labels))
    spare = iter(SPARE_COLOURS * (1 + len(labels) // len(SPARE_COLOURS)))
    return {label: KNOWN_COLOURS[label] if label in KNOWN_COLOURS else next(spare) for label in labels}


def clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a time in seconds."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _duration(seconds: float) -> str:
    """A span for people: ``42 s`` under two minutes, else :func:`clock`."""
    return f"{seconds:.0f} s" if seconds < 120 else clock(seconds)


def hours_text(hours: float) -> str:
    """Hours with 3 significant digits under 100 (``0.0433``), else whole with thousands separators."""
    return f"{hours:.3g}" if hours < 100 else f"{hours:,.0f}"


def _tick_step(duration_s: float) -> float:
    """A round tick spacing (s) giving 4 to 12 ticks over ``duration_s``."""
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    return next((step for step in steps if duration_s / step <= 12), 86400 * math.ceil(duration_s / 86400 / 12))


def figure_uri(figure) -> str:
    """A matplotlib figure as a PNG ``data:`` URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plot_timelines(files: Sequence[Mapping[str, Any]], segments: Mapping[str, pa.Table],
                   colours: Mapping[str, str]):
    """One strip per file: its segments coloured by label along its own time axis (h:mm:ss).

    Parameters
    ----------
    files : sequence of mapping
        ``path, label, confidence, duration_s`` of each file, top to bottom.
    segments : mapping of str to pa.Table
        Per path, ``start_s, end_s, label`` (s); a file without segments gets an empty strip.
    colours : mapping of str to str
        Colour of each label (:func:`label_colours`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    figure = Figure(figsize=(11, 0.3 + 0.62 * len(files)), layout="constrained")
    grid = figure.subplots(len(files), 1, squeeze=False)[:, 0]
    for axes, row in zip(grid, files):
        table = segments.get(row["path"])
        duration = max(float(row["duration_s"] or 0.0), 1e-3)
        if table is not None:
            for label in pc.unique(table["label"]).to_pylist():
                part = table.filter(pc.equal(table["label"], label))
                starts = part["start_s"].to_numpy()
                axes.broken_barh(list(zip(starts, part["end_s"].to_numpy() - starts)), (0, 1),
                                 facecolors=colours.get(label, "black"), linewidth=0, antialiased=False)
        axes.set_xlim(0, duration)
        axes.set_ylim(0, 1)
        axes.set_yticks([])
        axes.xaxis.set_major_locator(MultipleLocator(_tick_step(duration)))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: clock(value)))
        axes.tick_params(axis="x", labelsize=7, pad=1)
        name = "/".join(row["path"].rstrip("/").split("/")[-2:])
        axes.set_title(f"{name}  ·  {row['label']} {row['confidence']:.2f}  ·  {clock(duration)}", fontsize=8,
                       loc="left", pad=2)
    figure.legend(handles=[Patch(color=colour, label=label) for label, colour in colours.items()],
                  loc="outside upper right", ncols=len(colours), fontsize=8, frameon=False)
    return figure


def save_timelines(out: str, paths: Sequence[str], png: str | os.PathLike) -> None:
    """Write a PNG of the timelines (:func:`plot_timelines`) of the ok files ``paths`` of output directory ``out``."""
    wanted = set(paths)
    rows = [row for batch in iter_output(out, "predictions", ("path", "label", "confidence", "duration_s", "status"))
            for row in batch.to_pylist() if row["path"] in wanted and row["status"] == "ok"]
    if not rows:
        raise InputError(f"{out} has no labelled file among {sorted(wanted)}")
    segments = segments_of_files(out, wanted)
    colours = label_colours(label for table in segments.values() for label in pc.unique(table["label"]).to_pylist())
    plot_timelines(sorted(rows, key=lambda row: paths.index(row["path"])), segments, colours).savefig(png, dpi=100)


def plot_totals(files_by_label: Mapping[str, int], hours_by_label: Mapping[str, float],
                colours: Mapping[str, str]):
    """Two bar charts side by side: files per label, and hours per label."""
    from matplotlib.figure import Figure

    labels = sorted(set(files_by_label) | set(hours_by_label))
    figure = Figure(figsize=(9, 0.9 + 0.35 * len(labels)), layout="constrained")
    for axes, (title, values) in zip(figure.subplots(1, 2), (("files", files_by_label),
                                                             ("hours", hours_by_label))):
        heights = [values.get(label, 0) for label in labels]
        bars = axes.barh(labels, heights, color=[colours[label] for label in labels])
        axes.bar_label(bars, labels=[hours_text(value) if title == "hours" else f"{value:,}" for value in heights],
                       fontsize=8, padding=2)
        axes.set_title(title, fontsize=10)
        axes.invert_yaxis()
        axes.margins(x=0.2)
        axes.spines[["top", "right"]].set_visible(False)
    return figure


def plot_confidence(histogram: Mapping[str, Sequence[int]], colours: Mapping[str, str]):
    """The confidence of the ok files: stacked histogram per label over [0, 1]."""
    from matplotlib.figure import Figure

    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    figure = Figure(figsize=(9, 2.8), layout="constrained")
    axes = figure.subplots()
    bottom = np.zeros(CONFIDENCE_BINS)
    for label in sorted(histogram):
        counts = np.asarray(histogram[label], np.float64)
        axes.bar(edges[:-1], counts, width=np.diff(edges), bottom=bottom, align="edge", color=colours[label],
                 label=label, edgecolor="white", linewidth=0.5)
        bottom += counts
    axes.set_xlim(0, 1)
    axes.set_xlabel("confidence (probability of the file's label)")
    axes.set_ylabel("files")
    axes.legend(fontsize=8, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


# ---------------------------------------------------------------------------------------- HTML
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1150px;
color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.facts{color:#555;font-size:.9rem}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{background:#f4f6f8;border-radius:8px;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.5rem}.bad b{color:#b00020}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border-bottom:1px solid #eee;padding:.25rem .6rem;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.p{word-break:break-all;max-width:46rem}
.sw{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.4rem;vertical-align:-1px}
img{max-width:100%}.note{color:#666;font-size:.85rem}
"""


def _image(figure, alt: str) -> str:
    """An ``<img>`` holding a matplotlib figure."""
    return f'<img alt="{html.escape(alt)}" src="{figure_uri(figure)}">'


class _Markup(str):
    """HTML that a table cell takes as it is (everything else is escaped)."""


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[bool]) -> str:
    """An HTML table; cells are escaped, numeric columns right-aligned, path-like text wraps."""
    def cell(value: Any, is_number: bool, tag: str = "td") -> str:
        kind = "n" if is_number else ("p" if isinstance(value, str) and "/" in value else "")
        return f'<{tag} class="{kind}">{value if isinstance(value, _Markup) else html.escape(str(value))}</{tag}>'

    head = "".join(cell(name, is_number, "th") for name, is_number in zip(headers, numeric))
    body = "".join("<tr>" + "".join(cell(value, is_number) for value, is_number in zip(row, numeric)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(label: str, colours: Mapping[str, str]) -> _Markup:
    """A label with a square of its colour."""
    from matplotlib.colors import to_hex

    return _Markup(f'<span class="sw" style="background:{to_hex(colours[label])}"></span>{html.escape(label)}')


def render_report(summary: RunSummary, data: ReportData, *, segment_hours_by_label: Mapping[str, float],
                  timelines: Mapping[str, pa.Table], out: str, files: str | None = None) -> str:
    """The report page (HTML text) from the summary, the gathered rows and the timelines' segments."""
    labels = set(summary.by_label) | set(segment_hours_by_label) | {
        label for table in timelines.values() for label in pc.unique(table["label"]).to_pylist()}
    colours = label_colours(labels)
    ok = summary.by_status.get("ok", 0)
    hours = sum(summary.hours_by_label.values())
    cards = [("files", f"{summary.files:,}", ""), ("labelled", f"{ok:,}", ""),
             ("failed", f"{summary.failures:,}", " bad" if summary.failures else ""),
             ("hours labelled", hours_text(hours), ""), ("truncated", f"{summary.truncated:,}", ""),
             ("run time", _duration(summary.timings_s.get("total", 0.0)), "")]
    facts = [f"output <code>{html.escape(out)}</code>", f"model <code>{html.escape(summary.model_id or '?')}</code>",
             f"features <code>{html.escape(summary.feature_hash or '?')}</code>",
             f"msc {html.escape(summary.msc_version or '?')}", f"started {html.escape(summary.started_at or '?')}"]
    parts = [f"<h1>msc archive report</h1><p class=facts>{' · '.join(facts)}</p><div class=cards>"
             + "".join(f'<div class="card{extra}"><b>{value}</b>{name}</div>' for name, value, extra in cards)
             + "</div>"]
    if summary.timings_s:
        parts.append("<p class=note>time per phase: " + ", ".join(
            f"{html.escape(name)} {seconds:.1f} s" for name, seconds in summary.timings_s.items()) + "</p>")

    parts.append("<h2>Totals per class</h2>")
    if labels:
        rows = [(_swatch(label, colours), f"{summary.by_label.get(label, 0):,}",
                 f"{summary.by_label.get(label, 0) / max(ok, 1):.1%}", hours_text(summary.hours_by_label.get(label, 0)),
                 hours_text(segment_hours_by_label.get(label, 0))) for label in sorted(labels)]
        parts.append(_table(["class", "files", "share of files", "hours (files with this label)",
                             "hours (segments with this label)"], rows, numeric=[False, True, True, True, True]))
        totals = plot_totals(summary.by_label, segment_hours_by_label or summary.hours_by_label, colours)
        parts.append(_image(totals, "files and hours per class"))
    else:
        parts.append("<p>No file was labelled.</p>")

    parts.append("<h2>Confidence</h2>")
    if summary.confidence_histogram:
        parts.append('<p class=note>How sure the model is of each file\'s label (the mean probability of that '
                     'label over the file\'s windows), over every labelled file.</p>')
        parts.append(_image(plot_confidence(summary.confidence_histogram, colours), "confidence histogram"))

    parts.append(f"<h2>Failed files ({summary.failures:,})</h2>")
    if summary.failures:
        parts.append("<p class=note>Every failed file is a row with <code>status = 'error'</code> in "
                     f"<code>{html.escape(_join(out, 'predictions.parquet'))}</code> (and .csv); its reason is "
                     "in the <code>error</code> column.</p>")
        parts.append(_table(["reason", "files"], data.reasons, numeric=[False, True]))
        shown = f"the first {len(data.failed)}" if len(data.failed) < summary.failures else "all"
        parts.append(f"<p>{shown} of them:</p>")
        parts.append(_table(["file", "reason"], [(row["path"], row["error"] or "") for row in data.failed],
                            numeric=[False, False]))
    else:
        parts.append("<p>None: every file was decoded and labelled.</p>")

    parts.append(f"<h2>Least certain files ({len(data.uncertain)})</h2>")
    parts.append(_table(["file", "label", "confidence", "duration"],
                        [(row["path"], _swatch(row["label"], colours), f"{row['confidence']:.3f}",
                          clock(row["duration_s"] or 0)) for row in data.uncertain],
                        numeric=[False, False, True, True]))

    parts.append("<h2>Timelines</h2>")
    groups = [(f"A stable sample of {len(data.sample)} of the {ok:,} labelled files (the same files on every "
               "report of this archive; <code>msc report --files PATTERN</code> picks others).", data.sample)]
    if files:
        more = (f"; the first {len(data.matched)} are shown" if data.matched_total > len(data.matched) else "")
        groups.append((f"Files matching <code>{html.escape(files)}</code>: {data.matched_total:,}{more}.",
                       data.matched))
    for text, rows in groups:
        parts.append(f"<p class=note>{text} Each strip is one file from its start to its end; colour = class of "
                     "each segment.</p>")
        for start in range(0, len(rows), TIMELINES_PER_FIGURE):
            chunk = rows[start:start + TIMELINES_PER_FIGURE]
            parts.append(_image(plot_timelines(chunk, timelines, colours), "timelines"))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>msc report: '
            f'{html.escape(out)}</title><meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(out: str, *, summary: RunSummary | None = None, files: str | None = None,
                 sample: int = REPORT_LIMITS["sample"], html_path: str | None = None) -> str:
    """Write the report page of an ``msc infer`` output directory; returns where it went.

    Parameters
    ----------
    out : str
        Output directory (local path or URI) with ``predictions`` and ``segments`` (Parquet or CSV).
    summary : RunSummary or None
        The run's facts (default: :func:`read_summary`).
    files : str or None
        Glob over full paths whose files get timelines too (at most ``REPORT_LIMITS["matched"]``).
    sample : int
        Files in the stable timeline sample.
    html_path : str or None
        Where to write (default ``out/report.html``).

    Raises
    ------
    InputError
        ``out`` is not an ``msc infer`` output directory.
    ParameterError
        A negative ``sample``.
    """
    from .shards import atomic_output

    if sample < 0:
        raise ParameterError(f"the timeline sample must be 0 or more files, not {sample}")
    summary = summary or read_summary(out)
    data = gather_report_data(out, files=files, sample=sample)
    timelines = segments_of_files(out, [row["path"] for row in data.sample + data.matched])
    page = render_report(summary, data, segment_hours_by_label=segment_hours(out), timelines=timelines, out=out,
                         files=files)
    target = html_path or _join(out, REPORT_FILE)
    with atomic_output(target) as sink:
        sink.write(page.encode())
    return target


# ---------------------------------------------------------------------------------------- models
def model_facts(model_dir: str | os.PathLike) -> dict:
    """What a model directory is, from its files alone (:func:`msc_core.model.check_model_dir`; Keras is not loaded).

    Returns
    -------
    dict
        ``model_id, source, created_at, msc_version, labels, feature_hash, features`` (the feature
        config), ``widths, dense, training`` (``model.json``'s ``extra``), ``calibration`` (or None),
        ``evaluation`` (``evaluation.json`` when the directory has one, else None).

    Raises
    ------
    ModelLoadError
        Not an msc model directory, or one that msc would refuse to load.
    """
    from .evaluation import EVALUATION_FILE
    from .model import check_model_dir
    from .storage import exists, read_bytes

    metadata, config = check_model_dir(model_dir)
    evaluation_path = f"{os.fspath(model_dir).rstrip('/')}/{EVALUATION_FILE}"
    evaluation = json.loads(read_bytes(evaluation_path)) if exists(evaluation_path) else None
    features = json.loads(config.to_json())
    return {**{name: metadata.get(name) for name in ("model_id", "source", "created_at", "msc_version", "labels",
                                                     "feature_hash", "widths", "dense")},
            "features": features, "training": metadata.get("extra") or {},
            "calibration": metadata.get("calibration"), "evaluation": evaluation}


def model_info_lines(facts: Mapping[str, Any]) -> list[str]:
    """:func:`model_facts` for a person: identity, classes, features, architecture, training, scores, calibration."""
    features = facts["features"]
    lines = [f"model        {facts['model_id']} ({facts['source']}, made {facts['created_at']} "
             f"by msc {facts['msc_version']})",
             f"classes      {', '.join(facts['labels'] or [])}",
             f"features     hash {facts['feature_hash']}: " + ", ".join(
                 f"{name} {features[name]}" for name in ("sample_rate", "n_mels", "n_fft", "hop_length", "layers")
                 if name in features),
             f"widths       conv {facts['widths']}, dense {facts['dense']}"]
    training = facts["training"]
    if training:
        shown = {name: training[name] for name in ("shards", "train_windows", "epochs_run", "best_epoch",
                                                   "best_val_accuracy", "workers", "purpose") if name in training}
        if isinstance(shown.get("train_windows"), list) and len(shown["train_windows"]) == len(facts["labels"]):
            shown["train_windows"] = ", ".join(f"{label} {count}" for label, count in
                                               zip(facts["labels"], shown["train_windows"]))
        lines.append("training     " + "; ".join(f"{name} {value:.4g}" if isinstance(value, float) else
                                                 f"{name} {value}" for name, value in shown.items()))
    evaluation = facts["evaluation"]
    if evaluation:
        per_class = ", ".join(f"{label} F1 {scores['f1']:.3f}" for label, scores in evaluation["per_class"].items())
        lines.append(f"evaluation   {evaluation['split']} split, {evaluation['windows']} windows: accuracy "
                     f"{evaluation['accuracy']:.4f}, {per_class}, ROC-AUC {evaluation.get('roc_auc')}, "
                     f"log loss {evaluation['log_loss']:.4f}, ECE {evaluation['ece']:.4f}")
    else:
        lines.append("evaluation   none stored (msc evaluate MODEL SHARDS --out MODEL writes one)")
    calibration = facts["calibration"]
    if calibration:
        fitted = calibration.get("fitted_on") or {}
        where = ", ".join(f"{name} {fitted[name]}" for name in ("shards", "split", "windows", "set_by_hand")
                          if name in fitted)
        lines.append(f"calibration  temperature {calibration['temperature']:.4g} ({where})")
    else:
        lines.append("calibration  none (raw softmax; msc models calibrate fits a temperature)")
    return lines
