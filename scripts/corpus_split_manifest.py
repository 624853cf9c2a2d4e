"""Write a manifest of the training corpus that holds out whole source packages.

Usage: python scripts/corpus_split_manifest.py CORPUS_DIR OUT.csv

Validation and test hold packages (sources) that training never sees, so the
scores estimate accuracy on recordings from unseen sources. Groups (tracks,
voices) never straddle splits because whole packages move together; the two
packages that share a voice (Asterisk en/es) and the two grouped by language
(ktuberling/klettres) stay together in train.

Reads either corpus: v2 from ``scripts/corpus/build.sh`` (column ``source``;
codec copies keep the source and group of the clip they were made from, so
they land in its split) or the first one (column ``source_package``). The
default model is a music/speech classifier (``msc_core.config.LABELS``), so only
those two labels are kept; the v2 classes speech_over_music, silence and noise
are left for the segmentation model of issue 11.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HELD_OUT = {
    "val": ["hedgewars-data", "enigma-data", "btanks-data",                 # music, about 40 min
            "asterisk-core-sounds-ru-wav", "asterisk-prompt-es-co"],          # speech, about 38 min
    "test": ["wesnoth-1.16-music", "lordsawar-data", "xmoto-data",          # music, about 48 min
             "asterisk-core-sounds-it-wav", "asterisk-prompt-fr-armelle"],    # speech, about 42 min
}


def main(corpus: str, out: str) -> None:
    table = pd.read_csv(Path(corpus) / "manifest.csv")
    if "source_package" not in table.columns:
        table["source_package"] = table["source"]
    table = table[table["label"].isin(["music", "speech"])].copy()
    split_of = {package: split for split, packages in HELD_OUT.items() for package in packages}
    table["split"] = table["source_package"].map(split_of).fillna("train")
    table["path"] = [str((Path(corpus) / path).resolve()) for path in table["path"]]
    table[["path", "label", "group", "split"]].to_csv(out, index=False)
    print(table.groupby(["split", "label"])["duration_s"].agg(["count", "sum"]).div([1, 60]).round(1)
          .rename(columns={"count": "clips", "sum": "minutes"}))


if __name__ == "__main__":
    main(*sys.argv[1:])
