#!/usr/bin/env bash
# Rebuild msc's bundled default model from the project's corpus (scripts/corpus/) and nothing else.
# Usage: bash scripts/build_default_model.sh [WORK_DIR]     (default ./runs; several hours on 2 cores, see below)
#   1. builds corpus v2 with scripts/corpus/build.sh (Debian 12 packages, pinned and checksummed; skipped if present)
#   2. writes two manifests that hold out whole source packages as val and test (scripts/corpus_split_manifest.py):
#      speech and music only (for the convolutions), and every content class
#   3. the convolutions: one augmented copy of every speech/music train clip (band-limiting, white noise, time
#      shift; val and test never augmented), featurized with the originals, then the whole 3D CNN trained on the
#      paper's binary task (msc train; about 12-13 training windows/s on 2 cores with oneDNN)
#   4. the head: every class featurized, a new dense head learnt over those frozen convolutions
#      (msc train --head-from; minutes), its confidence temperature fitted on the val split (msc models calibrate)
#   5. copies the model into msc_core/default_model/
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mkdir -p "${1:-runs}" && cd "${1:-runs}" && pwd)
CORPUS=${CORPUS:-$WORK/corpus}
[ -f "$CORPUS/manifest.csv" ] || bash scripts/corpus/build.sh "$CORPUS"
.venv/bin/python scripts/corpus_split_manifest.py "$CORPUS" "$WORK/binary_manifest.csv" --classes speech,music
.venv/bin/python scripts/corpus_split_manifest.py "$CORPUS" "$WORK/classes_manifest.csv"
AUG=$WORK/augment/band+noise+shift
[ -f "$AUG/manifest.csv" ] || .venv/bin/python scripts/augment_corpus.py "$WORK/binary_manifest.csv" "$AUG" \
    --kinds band,noise,shift
.venv/bin/msc featurize "$AUG/manifest.csv" --out "$AUG/shards" --allow-outside
[ -f "$WORK/convolutions/model.json" ] || .venv/bin/msc train "$AUG/shards" --out "$WORK/convolutions" \
    --workers 1 --widths 16,32,64 --epochs 12 --patience 4 --lr-patience 2 --seed 0
.venv/bin/msc featurize "$WORK/classes_manifest.csv" --out "$WORK/classes_shards" --allow-outside
rm -rf "$WORK/model"
.venv/bin/msc train "$WORK/classes_shards" --out "$WORK/model" --head-from "$WORK/convolutions" \
    --batch-size 32 --epochs 200 --patience 20 --seed 0
.venv/bin/msc models calibrate "$WORK/model" "$WORK/classes_shards" --split val
mkdir -p msc_core/default_model
cp "$WORK/model"/{model.keras,feature_config.json,model.json,evaluation.json,confusion_matrix.png,training_curves.png} \
    msc_core/default_model/
echo "default model updated from $WORK/model; evaluation files are beside it"
