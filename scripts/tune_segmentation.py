"""Choose the segmenter's smoothing settings on broadcast-like programmes of the *validation* split.

    python scripts/tune_segmentation.py CORPUS_DIR SPLIT_MANIFEST.csv [--programmes 3] [--minutes 8]
        [--dir /tmp/msc-broadcast-val] [--model DIR]

Builds programmes exactly as ``benchmarks/bench_broadcast.py`` does, but from the
clips of the ``val`` split (whole source packages held out from training, and
never the ``test`` split the benchmark reports on), labels each once with
labelling's default windows, then runs :func:`msc_core.segmentation.segment_timeline`
with every combination of ``evidence_s``, ``expected_s``, ``min_content_s`` and ``min_silence_s`` on the
same window probabilities and prints the benchmark's scores for each, best first by the
mean of 5-class accuracy, boundary F at +-0.5 s and at +-2 s. The defaults of
:class:`msc_core.segmentation.SegmentParams` come from this table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import bench_broadcast as broadcast  # noqa: E402
from msc_core.labelling import featurize_file, label_features, labelling_windows, load_model  # noqa: E402
from msc_core.segmentation import SegmentParams, segment_timeline  # noqa: E402

EVIDENCE_S = (0.01, 0.5, 1.0, 2.0)
EXPECTED_S = (10.0, 30.0)
MIN_CONTENT_S = (2.0, 4.0)
MIN_SILENCE_S = (0.5, 1.0, 1.5)
OBJECTIVE = ("5-class acc", "F@0.5", "F@2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("split_manifest", type=Path)
    parser.add_argument("--programmes", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/msc-broadcast-val"))
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    clips = broadcast.held_out_clips(args.corpus, args.split_manifest, split="val")
    items = broadcast.programmes(args.dir, args.programmes, args.minutes, clips)
    model = load_model(args.model)
    config, coarse_s = labelling_windows()
    labelled = []
    for path, truth in items:
        features = featurize_file(path, config)
        label = label_features(features, model, coarse_s=coarse_s)
        centre_s = (label.window_start_s + label.window_end_s) / 2
        labelled.append((truth, sf.info(path).duration, centre_s, label.window_probs, features.cues))
    rows = []
    for evidence, expected, minimum, silence in itertools.product(EVIDENCE_S, EXPECTED_S, MIN_CONTENT_S, MIN_SILENCE_S):
        params = dataclasses.replace(SegmentParams(), evidence_s=evidence, expected_s=expected, min_content_s=minimum,
                                     min_silence_s=silence)
        scores = []
        for truth, duration, centre_s, probs, cues in labelled:
            segments = segment_timeline(centre_s, probs, duration, cues=cues, params=params)
            scores.append(broadcast.score(truth, [(a, b, label) for a, b, label, _ in segments], duration))
        pooled = broadcast.summary(scores)
        rows.append((sum(pooled[name] for name in OBJECTIVE) / len(OBJECTIVE), params, pooled))
    columns = ("music/speech acc", "3-class acc", "5-class acc", "silence recall", "noise recall", "F@0.5", "F@2")
    default = SegmentParams()
    print(f"{len(items)} validation programmes, {sum(row[1] for row in labelled) / 60:.1f} min; defaults: evidence_s "
          f"{default.evidence_s:g}, expected_s {default.expected_s:g}, min_content_s {default.min_content_s:g}, "
          f"min_silence_s {default.min_silence_s:g}\n")
    print("| evidence_s | expected_s | min_content_s | min_silence_s | objective | " + " | ".join(columns) + " |")
    print("|---:|---:|---:|---:|---:|" + "---:|" * len(columns))
    for objective, params, pooled in sorted(rows, key=lambda row: -row[0]):
        settings = (params.evidence_s, params.expected_s, params.min_content_s, params.min_silence_s)
        print("| " + " | ".join(f"{value:g}" for value in settings) + f" | {objective:.3f} | "
              + " | ".join(f"{pooled[name]:.3f}" for name in columns) + " |")


if __name__ == "__main__":
    main()
