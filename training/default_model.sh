#!/usr/bin/env bash
# How the shipped default model (dynamic_tinybert/default_model) was made, on CPU (2 cores, no
# accelerator), from the repository root after `python scripts/fetch_pretrained.py`:
#   1. all-MiniLM-L6-v2 fine-tuned directly on the training files (no teacher), 2 epochs;
#   2. LengthDrop, 150 steps (kept only if its held-out frontier beats the fine-tuned model's);
#   3. fp16 export of both, the constant-ratio configurations of each on the first 300 questions
#      of the held-out split, and the search on the one that ships.
# The logs of the run that made the shipped model are in training/logs/. Each step resumes
# where it stopped when the script runs again.
set -euo pipefail
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/train}
TRAIN=("$DATA"/squadshifts_new_wiki.json "$DATA"/squadshifts_reddit.json "$DATA"/squadshifts_amazon.json
       "$DATA"/qed_nq_train.json "$DATA"/tydiqa_goldp_en_train.json)

dynamic-tinybert train --stage finetune --model .pretrained/all-MiniLM-L6-v2 --data "${TRAIN[@]}" \
  --output "$RUNS/student-finetune" --epochs 2 --batch-size 32 --lr 8e-5 --warmup 0.1 --seed 42 \
  --save-steps 250 --heldout-limit 1000

dynamic-tinybert train --stage lengthdrop --model "$RUNS/student-finetune" --data "${TRAIN[@]}" \
  --output "$RUNS/student-lengthdrop" --max-steps 150 --batch-size 32 --lr 2e-5 --warmup 0.1 --seed 42 \
  --save-steps 50 --heldout-limit 1000

SEARCH=(--data "$RUNS/student-finetune/heldout.json" --limit 300 --population 12 --mutations 12 --crossovers 12 --seed 0)
for stage in finetune lengthdrop; do
  python scripts/export_model.py --model "$RUNS/student-$stage" --out "$RUNS/export-$stage"
  dynamic-tinybert search --model "$RUNS/export-$stage" "${SEARCH[@]}" --iterations 0 --quiet
done
# compare the two constant-ratio frontiers (training/README.md); the better one goes on
SHIPPED=${SHIPPED:-finetune}
dynamic-tinybert search --model "$RUNS/export-$SHIPPED" "${SEARCH[@]}" --iterations 6
# then 4 more iterations (the search goes on from its state)
dynamic-tinybert search --model "$RUNS/export-$SHIPPED" "${SEARCH[@]}" --iterations 10
rm -f "$RUNS/export-$SHIPPED/search_state.json"
rm -rf dynamic_tinybert/default_model && cp -r "$RUNS/export-$SHIPPED" dynamic_tinybert/default_model
