#!/usr/bin/env bash
# Margins instead of shares (docs/selector.md, "Margins"), on CPU (2 cores), from the repository
# root, with the shipped model; nothing is trained.
#   1. the held-out split the training stages cut (seed 42; every stage writes it as heldout.json);
#   2. scripts/margin_sweep.py on all of it, fp32: the frontier's points for the budgets 0.25, 0.33,
#      0.4, 0.5 and 0.75 beside constant margins (about 9 minutes; training/logs/margins-heldout.txt);
#   3. on SQuAD dev, fp32, the margin each budget picks on the held-out split (the most accurate
#      whose mean FLOPs there fit the budget, the cheaper on a tie): 1, 1.5, 2, 3 and 4, and 2.5
#      and 2.75 between them (2-4 minutes each; training/logs/margins-dev.txt; the "seconds" there
#      are not timings: other work ran beside them).
set -euo pipefail
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/train}
DEV=${DEV:-../shared/data/squad/dev-v1.1.json}
TRAIN=("$DATA"/squadshifts_new_wiki.json "$DATA"/squadshifts_reddit.json "$DATA"/squadshifts_amazon.json
       "$DATA"/qed_nq_train.json "$DATA"/tydiqa_goldp_en_train.json)
mkdir -p "$RUNS/margins"

python scripts/heldout_split.py "$RUNS/margins/heldout.json" "${TRAIN[@]}"
python scripts/margin_sweep.py --data "$RUNS/margins/heldout.json" --dtype fp32 \
    --margins 1 1.25 1.5 2 2.5 2.75 3 3.25 4 4.5 5 --json "$RUNS/margins/heldout-sweep.json"
for margin in 1 1.5 2 2.5 2.75 3 4; do
    echo "margin $margin: $(dynamic-tinybert eval --data "$DEV" --dtype fp32 --margins "$margin" --json --quiet)"
done
