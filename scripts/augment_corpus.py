"""Write augmented copies of a manifest's TRAIN clips and a manifest holding originals plus copies.

Usage::

    python scripts/augment_corpus.py MANIFEST.csv OUT_DIR --kinds band,noise [--copies 1] [--seed 0]

Each train clip gets ``--copies`` copies, each with one random draw of every
kind in ``--kinds`` (:func:`msc_core.augment.augment_clip`; seeded by the clip's
path, so reruns write the same audio). Copies keep the clip's label and group
and are always ``train``: validation and test rows are passed through
untouched, and no group can straddle splits. Audio is decoded with msc's own
decoder at the feature rate and written as 32-bit float WAV (no clipping).

Writes ``OUT_DIR/audio/*.wav`` and ``OUT_DIR/manifest.csv`` (the input columns
plus ``augmentation``, a JSON of what was drawn; empty for originals), ready
for ``msc featurize OUT_DIR/manifest.csv --allow-outside``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from msc_core.audio import load_audio  # noqa: E402
from msc_core.augment import KINDS, augment_clip  # noqa: E402
from msc_core.config import PAPER  # noqa: E402
from msc_core.shards import atomic_output  # noqa: E402


def clip_seed(path: str, copy: int, seed: int) -> int:
    """A stable per-(clip, copy) seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{copy}:{path}".encode()).digest()[:8], "little")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="CSV with path,label,group,split")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--kinds", required=True, help=f"comma-separated, from {','.join(KINDS)}")
    parser.add_argument("--copies", type=int, default=1, help="augmented copies per train clip (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())

    table = pd.read_csv(args.manifest)
    audio_dir = Path(args.out) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rate = PAPER.sample_rate
    copies = []
    train = table[table["split"] == "train"]
    for number, row in enumerate(train.itertuples(index=False), 1):
        samples = load_audio(row.path, sample_rate=rate)
        for copy in range(args.copies):
            rng = np.random.default_rng(clip_seed(row.path, copy, args.seed))
            augmented, params = augment_clip(samples, rate, kinds=kinds, rng=rng)
            target = audio_dir / f"{Path(row.path).stem}__{'+'.join(kinds)}{copy}.wav"
            sf.write(target, augmented, rate, subtype="FLOAT")
            copies.append({**row._asdict(), "path": str(target.resolve()), "augmentation": json.dumps(params)})
        if number % 200 == 0:
            print(f"{number}/{len(train)} train clips augmented", flush=True)
    out = pd.concat([table.assign(augmentation=""), pd.DataFrame(copies)], ignore_index=True)
    with atomic_output(str((Path(args.out) / "manifest.csv").resolve())) as sink:  # its presence means "done"
        sink.write(out.to_csv(index=False).encode())
    print(f"{len(copies)} augmented copies of {len(train)} train clips ({'+'.join(kinds)}); "
          f"manifest {Path(args.out) / 'manifest.csv'}")
    return out


if __name__ == "__main__":
    main()
