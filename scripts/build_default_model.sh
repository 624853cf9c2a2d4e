#!/usr/bin/env bash
# Rebuild msc's bundled default model from the project's corpus of recorded speech and music.
# Usage: bash scripts/build_default_model.sh [WORK_DIR]     (default ./runs; about 1.5 h on 2 cores)
#   1. builds the corpus with scripts/corpus/build.sh (Debian 12 with apt; pinned packages; skipped if present;
#      the music and speech clips are used, see scripts/corpus/README.md)
#   2. writes a manifest that holds out whole source packages as val and test (scripts/corpus_split_manifest.py)
#   3. featurizes it (msc featurize: the val and test windows every evaluation reads)
#   4. adds one augmented copy of every train clip (band-limiting, white noise, time shift; val and test
#      are never augmented) and featurizes that, 5. trains (msc train), 6. copies the model into
#      msc_core/default_model/
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mkdir -p "${1:-runs}" && cd "${1:-runs}" && pwd)
CORPUS=${CORPUS:-$WORK/train_corpus}
[ -f "$CORPUS/manifest.csv" ] || bash scripts/corpus/build.sh "$CORPUS"
.venv/bin/python scripts/corpus_split_manifest.py "$CORPUS" "$WORK/corpus_manifest.csv"
.venv/bin/msc featurize "$WORK/corpus_manifest.csv" --out "$WORK/corpus_shards" --allow-outside
AUG=$WORK/augment/band+noise+shift
[ -f "$AUG/manifest.csv" ] || .venv/bin/python scripts/augment_corpus.py "$WORK/corpus_manifest.csv" "$AUG" \
    --kinds band,noise,shift
.venv/bin/msc featurize "$AUG/manifest.csv" --out "$AUG/shards" --allow-outside
.venv/bin/msc train "$AUG/shards" --out "$WORK/model_w16_aug" --workers 1 --widths 16,32,64 \
    --epochs 12 --patience 4 --lr-patience 2 --seed 0
mkdir -p msc_core/default_model
cp "$WORK/model_w16_aug"/{model.keras,feature_config.json,model.json,evaluation.json,confusion_matrix.png,training_curves.png} \
    msc_core/default_model/
echo "default model updated from $WORK/model_w16_aug; evaluation files are beside it"
