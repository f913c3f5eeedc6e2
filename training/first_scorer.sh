#!/usr/bin/env bash
# The first layer's scorer trained anew with dropout (docs/selector.md, "The first scorer"), on CPU
# (2 cores), from the repository root, on top of the shipped model; then the shipped model and the
# new one compared on the held-out questions the frontier search did not see.
#   1. --selector-layers 1 --selector-dropout 0.3 --selector-fresh: only the first scorer trains,
#      from a new initialisation (the other five are the shipped ones); --max-minutes 35;
#   2. held-out F1 (fp32) of both at the frontier's points, on the held-out split after its
#      first 600 questions (the search's).
# Each step resumes where it stopped when the script runs again.
set -euo pipefail
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/train}
TRAIN=("$DATA"/squadshifts_new_wiki.json "$DATA"/squadshifts_reddit.json "$DATA"/squadshifts_amazon.json
       "$DATA"/qed_nq_train.json "$DATA"/tydiqa_goldp_en_train.json)

dynamic-tinybert train --stage selector --model dynamic_tinybert/default_model --output "$RUNS/first-scorer" \
    --data "${TRAIN[@]}" --batch-size 32 --lr 2e-3 --warmup 0.05 --seed 42 --save-steps 600 \
    --heldout-limit 1000 --selector-layers 1 --selector-dropout 0.3 --selector-fresh --epochs 3 \
    --max-minutes 35

python - "$RUNS" <<'PY'
import sys
from dynamic_tinybert.data import read_squad, write_squad
runs = sys.argv[1]
write_squad(read_squad(f"{runs}/first-scorer/heldout.json")[600:], f"{runs}/heldout-after-600.json")
PY
for lengths in 0.35,0.35,0.3,0.2,0.15,0.15 0.5,0.45,0.35,0.25,0.2,0.2 0.6,0.5,0.45,0.4,0.25,0.2 \
               0.65,0.65,0.6,0.55,0.3,0.25 0.75,0.75,0.75,0.75,0.75,0.3 1,1,1,1,1,1; do
    for model in dynamic_tinybert/default_model "$RUNS/first-scorer"; do
        f1=$(dynamic-tinybert eval --model "$model" --data "$RUNS/heldout-after-600.json" --dtype fp32 \
             --lengths "$lengths" --json --quiet | python -c "import json, sys; print(json.load(sys.stdin)['f1'])")
        echo "$lengths $model $f1"
    done
done
