"""``msc demo``: the whole system on synthetic audio, on a local in-process Ray.

Steps, each printed as it starts (the jobs print their own progress):

1. generate clearly synthetic music-like and speech-like audio (``msc_core.synth``)
   in a folder-per-class layout, several formats and sample rates;
2. ``msc featurize`` it into shards (grouped 70/15/15 splits);
3. ``msc train`` a small 3D CNN with 2 Ray workers, evaluated on the test split;
4. ``msc infer`` a held-out synthetic archive (with one broken file) with that
   model, and with the bundled default model when the package has one;
5. write ``report.md``: a table of results with the pictures (confusion matrix,
   training curves, a timeline) and where each output lies, beside the archive
   report ``labels/report.html`` that ``msc infer`` writes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

DEMO_OUTPUTS = ("train_audio", "archive", "shards", "model", "model.ray", "labels", "labels_default")
DEMO_FORMATS = ((".wav", 22050, 1), (".flac", 16000, 1), (".wav", 44100, 2), (".ogg", 48000, 2))
TIMELINE_PNG = "timelines.png"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc demo``."""
    parser = subparsers.add_parser("demo", help="run the whole system on synthetic audio (local Ray)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="msc_demo", metavar="DIR", help="where everything goes (default ./msc_demo)")
    parser.add_argument("--files-per-class", type=int, default=32, help="training files per class (default 32)")
    parser.add_argument("--epochs", type=int, default=24, help="training epochs (default 24)")
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers (default 2)")
    parser.set_defaults(func=run)


def write_synthetic_archive(root: Path, *, files_per_class: int, seconds: float, seed: int) -> list[tuple[Path, str]]:
    """Write synthetic files under ``root/music`` and ``root/speech``; return (path, label) pairs."""
    import soundfile as sf

    from msc_core import synth

    written = []
    for label, generate in (("music", synth.music_like), ("speech", synth.speech_like)):
        for index in range(files_per_class):
            suffix, rate, channels = DEMO_FORMATS[index % len(DEMO_FORMATS)]
            samples = generate(seconds + index % 3, sample_rate=rate, seed=seed + index)
            path = root / label / f"synthetic_{label}_{index:03d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.repeat(samples[:, None], channels, axis=1), rate)
            written.append((path, label))
    return written


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every step worked."""
    from jobs.cli import build_parser
    from jobs.raylib import init_ray

    out = Path(args.out).resolve()
    for name in DEMO_OUTPUTS:  # a rerun starts afresh; nothing else in --out is touched
        shutil.rmtree(out / name, ignore_errors=True)
    started = time.monotonic()
    parser = build_parser()

    def step(title: str, argv: list[str] | None = None) -> int:
        print(f"\n== [{time.monotonic() - started:5.0f} s] {title}", flush=True)
        if argv is None:
            return 0
        print("   msc " + " ".join(argv), flush=True)
        sub = parser.parse_args(argv)
        return int(sub.func(sub) or 0)

    step("generating synthetic audio (music-like notes, speech-like syllables; NOT recordings)")
    write_synthetic_archive(out / "train_audio", files_per_class=args.files_per_class, seconds=10.0, seed=0)
    archive = write_synthetic_archive(out / "archive", files_per_class=6, seconds=12.0, seed=10_000)
    (out / "archive" / "broken.wav").write_bytes(b"RIFF\x00\x00not really audio")
    init_ray()

    step("featurizing the training audio into shards", ["featurize", str(out / "train_audio"), "--out",
                                                        str(out / "shards"), "--files-per-task", "8", "--hop", "2.5",
                                                        "--quiet"])
    model_dir = out / "model"
    if step(f"training a small 3D CNN on {args.workers} Ray workers",
            ["train", str(out / "shards"), "--out", str(model_dir), "--workers", str(args.workers), "--epochs",
             str(args.epochs), "--widths", "8,16,32", "--batch-size", "4",
             "--bn-momentum", "0.9"]) != 0:
        raise SystemExit("training failed")
    step("labelling the held-out synthetic archive (one broken file in it)",
         ["infer", str(out / "archive"), "--model", str(model_dir), "--out", str(out / "labels")])
    from msc_core.labelling import DEFAULT_MODEL_DIR

    with_default = DEFAULT_MODEL_DIR.is_dir()
    if with_default:
        step("labelling it again with the bundled default model (trained on recordings)",
             ["infer", str(out / "archive"), "--model", str(DEFAULT_MODEL_DIR), "--out", str(out / "labels_default")])
    report = write_report(out, archive, with_default, elapsed_s=time.monotonic() - started)
    step(f"done: report at {report}")
    print(report.read_text())
    return 0


def write_report(out: Path, archive: list[tuple[Path, str]], with_default: bool, *, elapsed_s: float) -> Path:
    """Write ``out/report.md``: per-file results against the known truth, and where outputs lie."""
    import pandas as pd

    truth = {str(path): label for path, label in archive}
    lines = ["# msc demo report", "",
             "All audio here is synthetic (generated music-like and speech-like signals).", ""]
    for name, folder in (("demo model", "labels"), ("default model", "labels_default")):
        if folder == "labels_default" and not with_default:
            continue
        table = pd.read_parquet(out / folder / "predictions.parquet")
        table["truth"] = table["path"].map(truth)
        ok = table[table["status"] == "ok"]
        accuracy = float((ok["label"] == ok["truth"]).mean()) if len(ok) else float("nan")
        lines += [f"## {name}: {len(ok)} files labelled, {len(table) - len(ok)} errors, accuracy {accuracy:.0%}", "",
                  "| file | truth | label | confidence | status |", "|---|---|---|---:|---|"]
        for row in table.sort_values("path").itertuples():
            confidence = "" if pd.isna(row.confidence) else f"{row.confidence:.2f}"
            known, label = (value if isinstance(value, str) else "-" for value in (row.truth, row.label))
            lines.append(f"| {Path(row.path).name} | {known} | {label} | {confidence} | "
                         f"{row.status}{': ' + row.error if row.status != 'ok' else ''} |")
        lines.append("")
    from msc_core.evaluation import CONFUSION_PNG, CURVES_PNG
    from msc_core.report import REPORT_FILE, save_timelines

    examples = [str(next(path for path, label in archive if label == wanted)) for wanted in ("music", "speech")]
    save_timelines(str(out / "labels"), examples, out / TIMELINE_PNG)
    lines += ["## Pictures", "",
              f"The archive report, with totals, confidences, the failed file and timelines: "
              f"[labels/{REPORT_FILE}](labels/{REPORT_FILE}).", "",
              "Test-split confusion matrix of the demo model (rows true, columns predicted):", "",
              f"![confusion matrix](model/{CONFUSION_PNG})", "",
              "Training curves (loss and accuracy per epoch, train and validation):", "",
              f"![training curves](model/{CURVES_PNG})", "",
              "Timelines of one music and one speech file as the demo model labelled them "
              "(colour = label of each segment):", "",
              f"![timelines]({TIMELINE_PNG})", "",
              "## Where the outputs lie", "",
              f"- shards: `{out / 'shards'}` (manifest.json, errors.parquet, shards/*.parquet)",
              f"- model and its test-split evaluation: `{out / 'model'}` (confusion matrix PNG, metrics, history, "
              "training curves)",
              f"- labels: `{out / 'labels'}` (predictions, windows, segments as Parquet and CSV; summary.json, "
              f"{REPORT_FILE})", "",
              f"Finished in {elapsed_s:.0f} s."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
