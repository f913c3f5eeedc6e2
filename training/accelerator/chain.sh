#!/usr/bin/env bash
# The real chain (started by call2.sh; log in $ROOT/chain.log): the teacher's fine-tuning, its
# evaluation on SQuAD dev, then, once the students' parts have arrived, for each student start
# (STARTS) intermediate-layer and prediction-layer distillation, the learned selector and
# LengthDrop. Every stage fits its schedule into its share of the time left before the deadline
# (train --max-minutes).
# Writes $R/DONE holding the exit status.
set -uo pipefail
deadline=$(( $(date +%s) + ${1:?usage: chain.sh SECONDS} ))
source training/accelerator/common.sh
TRAIN=("$D"/train/*.json)
STARTUP=${STARTUP:-20}  # seconds a stage spends before train() starts (interpreter, CUDA)
# minutes SHARE [STAGES_AFTER]: SHARE of the seconds left, less the start-up of each stage to come
minutes() {
    $PY -c "import sys,time; s=float(sys.argv[1]); left=$deadline-time.time()-$STARTUP*int(sys.argv[2]); print(round(max(0.2, s*left/60), 2))" "$1" "$2"
}
# the teacher's settings, the same in both recipe runs (a finished stage is recognised by them)
FT=(--epochs finetune=2 --batch-size finetune=32 --lr finetune=4e-5)
COMMON=(--teacher "$M/teacher" --data "${TRAIN[@]}" --out "$R" --train-args "--save-steps 100000 ${TRAIN_ARGS:-}")
finish() { echo "$1" >"$R/DONE"; echo "chain: exit $1 at $(date +%T)"; exit "$1"; }

rm -f "$R/DONE"  # a chain started again is not done because the one before it ended
echo "chain: start $(date +%T), deadline $(date -d @$deadline +%T)"
$PY scripts/recipe.py "${COMMON[@]}" --student "$M/teacher" --until finetune "${FT[@]}" \
    --minutes "finetune=$(minutes ${SHARE_FINETUNE:-0.27} 1)" || finish 1
echo "chain: teacher done $(date +%T)"
# STARTS: the students' starting points as NAME=LR (a package prepare.sh packed, and the peak
# learning rate of its prediction-layer distillation), each distilled from the same teacher in its
# own folder $R/NAME, all at once (a small student leaves most of the accelerator idle).
# NAME:PACKAGE=LR@BATCH runs PACKAGE under another NAME with another batch size (default 32), so one
# start can be distilled with two settings side by side: "student=3e-5 b128:student=1e-4@128".
read -r -a starts <<<"${STARTS:-student=1e-4@128}"
name_of() { local n=${1%%=*}; echo "${n%%:*}"; }
package_of() { local n=${1%%=*}; echo "${n#*:}"; }
arrived() { for s in "${starts[@]}"; do [ -e "$M/$(package_of "$s")" ] || return 1; done; [ -e "$D/dev" ]; }
for _ in $(seq 600); do source training/accelerator/common.sh >/dev/null; arrived && break; sleep 1; done
arrived || { echo "chain: a student or SQuAD dev never arrived"; finish 1; }
$PY -m dynamic_tinybert eval --model "$R/finetune" --data "$D"/dev/*.json --device "${DEVICE:-cuda}" --json --quiet \
    >"$R/teacher-dev.json" 2>"$R/teacher-dev.log" &
# shares of what is left: intermediate, prediction, selector, LengthDrop. The first lease showed
# that under a 15-minute lease intermediate-layer distillation gets too few steps (0.4 epoch left
# the shipped student at 4.6 held-out F1, and prediction-layer distillation could not bring it
# back), so by default prediction-layer distillation starts from the student; INTERMEDIATE=1 runs
# it. LENGTHDROP=0 leaves LengthDrop out (a fraction of an epoch does not pay: accelerator.md).
if [ "${INTERMEDIATE:-0}" = 1 ]; then
    shares=(0.34 0.28 0.12 0.26) stages=4 skip=()
else
    shares=(0 0.55 0.15 0.30) stages=3 skip=(--skip-intermediate)
fi
if [ "${LENGTHDROP:-1}" = 0 ]; then
    for i in 0 1 2; do  # LengthDrop's share to the other stages, in proportion
        shares[i]=$($PY -c "print(round(${shares[i]} / (1 - ${shares[3]}), 3))")
    done
    shares[3]=0 stages=$((stages - 1)) skip+=(--skip-lengthdrop)
fi
pids=()
for start in "${starts[@]}"; do
    name=$(name_of "$start") package=$(package_of "$start") lr=${start#*=} batch=32
    [[ $lr == *@* ]] && batch=${lr#*@} lr=${lr%@*}
    $PY scripts/recipe.py --teacher "$R/finetune" --skip-finetune --student "$M/$package" --data "${TRAIN[@]}" \
        --out "$R/$name" --train-args "--save-steps 100000 ${TRAIN_ARGS:-}" --skip-search "${skip[@]}" \
        --epochs intermediate=20 --batch-size intermediate=32 --lr intermediate=1e-4 \
        --minutes "intermediate=$(minutes "${shares[0]}" $stages)" \
        --epochs prediction=10 --batch-size "prediction=$batch" --lr "prediction=$lr" \
        --minutes "prediction=$(minutes "${shares[1]}" $stages)" \
        --epochs selector=3 --batch-size selector=32 --minutes "selector=$(minutes "${shares[2]}" $stages)" \
        --epochs lengthdrop=10 --batch-size lengthdrop=32 --minutes "lengthdrop=$(minutes "${shares[3]}" $stages)" \
        >"$R/$name.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for start in "${starts[@]}"; do echo "== $(name_of "$start")"; cat "$R/$(name_of "$start").log"; done
wait
cat "$R/teacher-dev.json"
finish $status
