#!/usr/bin/env bash
# Augmentation ablation for the model card: one model per augmentation, judged on the unseen-source VAL split.
# Usage: bash scripts/augment_experiments.sh [WORK_DIR]      (needs WORK_DIR/corpus_manifest.csv and
#        WORK_DIR/corpus_shards from scripts/build_default_model.sh; about 1 h on 2 cores)
#
# Every variant trains the same network (widths ${WIDTHS}) for the same number of steps: the baseline
# sees the train split ${EPOCHS} times; a variant's train split is twice as large (each clip plus one
# augmented copy, scripts/augment_corpus.py), so it trains for half the epochs. Validation and test rows
# are never augmented. All models are then scored in one run of scripts/model_card_eval.py --split val.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(cd "${1:-runs}" && pwd)
OUT=$WORK/augment
WIDTHS=${WIDTHS:-8,16,32}
EPOCHS=${EPOCHS:-4}
VARIANTS=${VARIANTS:-"band noise band,noise,shift"}   # time shift alone was not run (budget)
mkdir -p "$OUT"

train() {   # train SHARDS MODEL_DIR EPOCHS
    [ -f "$2/model.keras" ] || .venv/bin/msc train "$1" --out "$2" --workers 1 --widths "$WIDTHS" \
        --epochs "$3" --patience 99 --lr-patience 99 --bn-momentum 0.9 --seed 0
}

models=("none=$OUT/none/model")
train "$WORK/corpus_shards" "$OUT/none/model" "$EPOCHS"
for kinds in $VARIANTS; do
    name=${kinds//,/+}
    [ -f "$OUT/$name/manifest.csv" ] || .venv/bin/python scripts/augment_corpus.py "$WORK/corpus_manifest.csv" \
        "$OUT/$name" --kinds "$kinds"
    .venv/bin/msc featurize "$OUT/$name/manifest.csv" --out "$OUT/$name/shards" --allow-outside --quiet
    train "$OUT/$name/shards" "$OUT/$name/model" "$((EPOCHS / 2))"
    models+=("$name=$OUT/$name/model")
done
.venv/bin/python scripts/model_card_eval.py --shards "$WORK/corpus_shards" --split val --out "$OUT/eval_val" \
    --models "${models[@]}"
