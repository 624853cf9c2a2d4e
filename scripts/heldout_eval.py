"""Per-category accuracy on the corpus's held-out sources: msc models and inaSpeechSegmenter on the same clips.

Usage::

    python scripts/heldout_eval.py CORPUS_DIR SPLIT_MANIFEST.csv --models new=DIR previous=DIR paper=DIR \\
        [--ina .peers/ina/bin/python] [--split test] [--out heldout.json]

``NAME=DIR@bf16`` runs that model's convolutions in bfloat16 (``--precision``; default fp32).

Clips: every clip of ``--split`` in the split manifest (``scripts/corpus_split_manifest.py``:
whole source packages that training never saw), plus every generated ``silence``
clip of the corpus (no model learns silence). Each clip's category comes from
the corpus manifest (``scripts/corpus/``):

* ``music``: instrumental music (the corpus has no sung music, see its README);
* ``speech, wideband``: speech with ``bandwidth_hz`` above 4 kHz;
* ``speech, narrowband/codec``: speech band-limited to 4 kHz or less (telephony,
  GSM, G.711/G.726, Codec 2, low-bitrate MP3 copies);
* ``speech over music, -6/-12/-18 dB``: mixes, by the level of the music bed;
* ``silence`` and ``noise``.

Each method labels each whole clip: msc models with
:func:`msc_core.labelling.label_file` (5-s windows, segments, the file label is
the dominant class) in their own classes (``all``) and in the paper's binary view,
inaSpeechSegmenter (``sm`` engine, its own venv, ../shared/peers/README.md) by
the label with most seconds. A clip counts as right when the label is its
class; in the binary view, and for inaSpeechSegmenter (which has no such
class), speech over music counts as right when called speech. Also given:
music/speech balanced accuracy over the music and speech clips, and the share of
silence and noise clips called music or speech with confidence above 0.5.
Prints a Markdown table and writes every clip's answers to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from msc_core.labelling import label_file, load_model  # noqa: E402

INA_SCRIPT = """
import json, sys
from inaSpeechSegmenter import Segmenter
seg = Segmenter(vad_engine="sm", detect_gender=False)
out = {}
for path in sys.argv[1:]:
    seconds = {}
    for label, start, end in seg(path):
        label = {"noEnergy": "silence"}.get(label, label)
        seconds[label] = seconds.get(label, 0.0) + end - start
    out[path] = max(seconds, key=seconds.get) if seconds else "silence"
print(json.dumps(out))
"""


def clips(corpus: Path, split_manifest: Path, split: str) -> pd.DataFrame:
    """The evaluated clips with ``path``, ``label`` and ``category``."""
    corpus_rows = pd.read_csv(corpus / "manifest.csv")
    corpus_rows["path"] = [str((corpus / path).resolve()) for path in corpus_rows["path"]]
    held = pd.read_csv(split_manifest)
    chosen = set(held.loc[held["split"] == split, "path"])
    table = corpus_rows[corpus_rows["path"].isin(chosen) | (corpus_rows["label"] == "silence")].copy()

    def category(row) -> str:
        if row.label == "speech":
            return "speech, wideband" if row.bandwidth_hz > 4000 else "speech, narrowband/codec"
        if row.label == "speech_over_music":
            return f"speech over music, {row.music_level_db:g} dB"
        return {"music": "music (instrumental)"}.get(row.label, row.label)

    table["category"] = [category(row) for row in table.itertuples()]
    return table.sort_values(["category", "path"]).reset_index(drop=True)


def right(truth: str, said: str, *, binary: bool) -> bool:
    """Whether ``said`` is right for a clip of class ``truth`` (module docstring)."""
    if binary and truth == "speech_over_music":
        return said == "speech"
    return said == truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("split_manifest", type=Path)
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME=DIR")
    parser.add_argument("--ina", default=None, metavar="PYTHON")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=Path("heldout.json"))
    args = parser.parse_args()

    table = clips(args.corpus, args.split_manifest, args.split)
    answers: dict[str, tuple[list[str], list[float], bool]] = {}
    for name, directory in (item.split("=", 1) for item in args.models):
        directory, _, precision = directory.partition("@")  # NAME=DIR@bf16: that arithmetic (default fp32)
        model = load_model(directory, precision=precision or "fp32")
        views = ["all", "binary"] if len(model.labels) > 2 else ["binary"]
        for view in views:
            labels = [label_file(path, model, view=view) for path in table["path"]]
            answers[f"{name} ({view})"] = ([label.label for label in labels],
                                          [label.confidence for label in labels], view == "binary")
    if args.ina:
        reply = subprocess.run([args.ina, "-c", INA_SCRIPT, *table["path"]], check=True, capture_output=True,
                               text=True)
        said = json.loads(reply.stdout.strip().splitlines()[-1])
        answers["inaSpeechSegmenter sm"] = ([said[path] for path in table["path"]], [1.0] * len(table), True)

    categories = list(dict.fromkeys(table["category"]))
    print("| category | clips | " + " | ".join(answers) + " |")
    print("|---|---:|" + "---:|" * len(answers))
    for category in categories:
        rows = np.flatnonzero(table["category"] == category)
        cells = [np.mean([right(table["label"][i], said[i], binary=binary) for i in rows])
                 for said, _, binary in answers.values()]
        print(f"| {category} | {len(rows)} | " + " | ".join(f"{cell:.3f}" for cell in cells) + " |")
    speech = np.flatnonzero(table["label"] == "speech")
    music = np.flatnonzero(table["label"] == "music")
    quiet = np.flatnonzero(table["label"].isin(["silence", "noise"]))
    balanced = [0.5 * (np.mean([said[i] == "speech" for i in speech]) + np.mean([said[i] == "music" for i in music]))
                for said, _, _ in answers.values()]
    print("| music/speech balanced accuracy | " f"{len(speech) + len(music)} | "
          + " | ".join(f"{value:.3f}" for value in balanced) + " |")
    confident = [np.mean([said[i] in ("speech", "music") and confidence[i] > 0.5 for i in quiet])
                 for said, confidence, _ in answers.values()]
    print(f"| silence/noise called music or speech, confidence > 0.5 | {len(quiet)} | "
          + " | ".join(f"{value:.3f}" for value in confident) + " |")
    args.out.write_text(json.dumps({"clips": table[["path", "label", "category"]].to_dict("list"),
                                    "answers": {name: {"label": said, "confidence": confidence}
                                                for name, (said, confidence, _) in answers.items()}}, indent=1))


if __name__ == "__main__":
    main()
