#!/usr/bin/env bash
# How the default model shipped on 2026-11-27 was made: the distilled student of the second
# accelerator lease (one H100, 15 minutes; training/accelerator.md), then on the CPU (2 cores),
# from the repository root:
#   0. on the lease (accelerator.md, "The second lease"): all-mpnet-base-v2 fine-tuned 1.8 epochs
#      (SQuAD dev F1 87.41), then side by side from it prediction-layer distillation of the model
#      shipped before (lr 5e-5) and of all-MiniLM-L6-v2 (lr 1e-4), 1.75 epochs each, then each
#      one's selector on its frozen encoder (1 epoch; the shipped model's selector went on learning,
#      all-MiniLM-L6-v2's is new); both fetched, unpacked into runs/accel/student and
#      runs/accel/minilm (`python scripts/accelerator.py unpack FETCHED/student/selector runs/accel/student`);
#   1. the held-out split the stages cut (seed 42), in the order of the CPU runs before, and both
#      students at full length and with margins 2 and 3 on all of it (fp32): the one from the
#      shipped model wins on all three (training/accelerator.md);
#   2. its fp16 export and the search on the first 600 held-out questions, as for the model before
#      (training/selector.sh): population 12, 12 mutations and 12 crossovers, seed 0, but 8
#      iterations rather than 10 (about 3.5 minutes each here: the session's time); then every
#      point measured again in fp32, bf16 and int8, alone on the machine;
#   3. it replaces the shipped folder;
#   4. both folders, before and since, on the held-out questions the search did not see.
# SQuAD dev and the README's tables: training/README.md and the README name their commands.
set -euo pipefail
source "$(dirname "$0")/heldout_files.sh"  # RUNS, TRAIN, $RUNS/heldout.json and heldout-after-600.json
for start in student minilm; do
    for margins in none 2 3; do
        options=(--dtype fp32 --json --quiet)
        [ "$margins" = none ] || options+=(--margins "$margins")
        echo "$start, margins $margins: $(dynamic-tinybert eval --model "$RUNS/accel/$start" --data "$RUNS/heldout.json" "${options[@]}")"
    done
done

python scripts/export_model.py --model "$RUNS/accel/student" --out "$RUNS/export-accel"
SEARCH=(--data "$RUNS/heldout.json" --limit 600 --population 12 --mutations 12 --crossovers 12 --seed 0)
dynamic-tinybert search --model "$RUNS/export-accel" "${SEARCH[@]}" --iterations 8 --quiet
dynamic-tinybert search --model "$RUNS/export-accel" "${SEARCH[@]}" --iterations 8 --measure-only \
    --measure-dtypes fp32 bf16 int8
rm -f "$RUNS/export-accel/search_state.json"
rm -rf dynamic_tinybert/default_model && cp -r "$RUNS/export-accel" dynamic_tinybert/default_model

# 4. the folders shipped before and since on the held-out questions the search did not see
#    (training/README.md's table)
mkdir -p "$RUNS/shipped-before"
git archive e55bf7e dynamic_tinybert/default_model | tar -x --strip-components=2 -C "$RUNS/shipped-before"
for model in "$RUNS/shipped-before" dynamic_tinybert/default_model; do
    for option in "" "--budget 0.75" "--budget 0.5" "--budget 0.33" "--budget 0.25" "--margins 2" "--margins 3"; do
        # shellcheck disable=SC2086  # the option is two words, or none
        echo "$model [$option]: $(dynamic-tinybert eval --model "$model" --data "$RUNS/heldout-after-600.json" --dtype fp32 $option --json --quiet)"
    done
done
