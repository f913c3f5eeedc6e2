# Sourced by the training scripts that evaluate on the held-out split: RUNS and the five training
# files (TRAIN), and the split the training stages cut (seed 42), in the order of the CPU runs:
# $RUNS/heldout.json (all of it) and $RUNS/heldout-after-600.json (the questions after the first
# 600, which the shipped model's search did not see).
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/train}
TRAIN=("$DATA"/squadshifts_new_wiki.json "$DATA"/squadshifts_reddit.json "$DATA"/squadshifts_amazon.json
       "$DATA"/qed_nq_train.json "$DATA"/tydiqa_goldp_en_train.json)

python scripts/heldout_split.py "$RUNS/heldout.json" "${TRAIN[@]}"
python scripts/heldout_split.py "$RUNS/heldout-after-600.json" --skip 600 "${TRAIN[@]}"
