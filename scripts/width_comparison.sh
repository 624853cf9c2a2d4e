#!/usr/bin/env bash
# Width comparison for the model card: the paper's widths (32/64/128) and msc's default widths (16/32/64)
# trained on the same data with the same budget, then scored by scripts/model_card_eval.py.
# Usage: bash scripts/width_comparison.sh [WORK_DIR] [EPOCHS]     (needs WORK_DIR/corpus_shards; the
#        paper widths take about 20 min an epoch on 2 CPUs, so the default budget is 2 epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(cd "${1:-runs}" && pwd)
EPOCHS=${2:-2}
for widths in 16,32,64 32,64,128; do
    out=$WORK/widths/w${widths//,/-}_e$EPOCHS
    [ -f "$out/model.keras" ] || .venv/bin/msc train "$WORK/corpus_shards" --out "$out" --workers 1 \
        --widths "$widths" --epochs "$EPOCHS" --patience 99 --lr-patience 99 --bn-momentum 0.9 --seed 0
done
