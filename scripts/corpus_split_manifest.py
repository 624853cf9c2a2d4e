"""Write a manifest of the training corpus that holds out whole source packages.

Usage: python scripts/corpus_split_manifest.py CORPUS_DIR OUT.csv [--classes speech,music]

Validation and test hold packages (sources) that training never sees, so the
scores estimate accuracy on recordings from unseen sources. Groups (tracks,
voices) never straddle splits because whole packages move together; the two
packages that share a voice (Asterisk en/es) and the two grouped by language
(ktuberling/klettres) stay together in train.

Reads either corpus: v2 from ``scripts/corpus/build.sh`` (column ``source``;
codec copies keep the source and group of the clip they were made from, so
they land in its split) or the first one (column ``source_package``). The
model's classes (:data:`msc_core.config.CLASSES`, or those of ``--classes``) are kept; ``silence`` clips
are left out (silence is found by energy, not by the model). A speech-over-music
mix (source ``speech+music``) goes to the held-out split of either of its
packages, test first: its music bed is then one training never heard, while its
voice may be one of training's (every mixing voice is a training package).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from msc_core.config import CLASSES

HELD_OUT = {
    "val": ["hedgewars-data", "enigma-data", "btanks-data",                        # music, noise
            "asterisk-core-sounds-ru-wav", "asterisk-prompt-es-co"],            # speech
    "test": ["wesnoth-1.16-music", "lordsawar-data", "xmoto-data", "lincity-ng-data",  # music, noise
             "asterisk-core-sounds-it-wav", "asterisk-prompt-fr-armelle"],      # speech
}


def split_of(source: str) -> str:
    """The split of a clip from ``source`` (``a+b`` for a mix of packages a and b)."""
    splits = {split for package in source.split("+") for split, held in HELD_OUT.items() if package in held}
    return next((split for split in ("test", "val") if split in splits), "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--classes", default=",".join(CLASSES), help="labels to keep (default: every model class)")
    args = parser.parse_args()
    corpus, out = args.corpus, args.out
    table = pd.read_csv(Path(corpus) / "manifest.csv")
    if "source_package" not in table.columns:
        table["source_package"] = table["source"]
    table = table[table["label"].isin(args.classes.split(",")) & table["label"].isin(CLASSES)].copy()
    table["split"] = table["source_package"].map(split_of)
    table["path"] = [str((Path(corpus) / path).resolve()) for path in table["path"]]
    table[["path", "label", "group", "split"]].to_csv(out, index=False)
    print(table.groupby(["split", "label"])["duration_s"].agg(["count", "sum"]).div([1, 60]).round(1)
          .rename(columns={"count": "clips", "sum": "minutes"}))


if __name__ == "__main__":
    main()
