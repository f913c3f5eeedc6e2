#!/usr/bin/env bash
# Budgets that hold on other text (2026-11-30; README "Search and budgets"), on CPU (2 cores), from
# the repository root; nothing is trained:
#   1. every point of the shipped frontier (29 shares, 14 margin points) scored on the 1,112
#      held-out questions the search did not see (`search --confirm`; about 30 minutes; log
#      training/logs/confirm-frontier.txt); that frontier.json replaces the shipped one, and budgets
#      pick by the confirmed F1;
#   2. SQuAD dev with `--budget B --calibrate 256`, the budget picked by what margin points cost on
#      256 of dev's windows (log training/logs/calibrated-budgets-dev.txt).
set -euo pipefail
source "$(dirname "$0")/heldout_files.sh"  # RUNS, TRAIN, $RUNS/heldout.json and heldout-after-600.json
DEV=${DEV:-../shared/data/squad/dev-v1.1.json}
rm -rf "$RUNS/confirm-model" && cp -r dynamic_tinybert/default_model "$RUNS/confirm-model"
dynamic-tinybert search --model "$RUNS/confirm-model" --data "$RUNS/heldout-after-600.json" --confirm
cp "$RUNS/confirm-model/frontier.json" dynamic_tinybert/default_model/frontier.json

for budget in 0.5 0.33 0.25; do
    echo "--budget $budget --calibrate 256:"
    dynamic-tinybert eval --data "$DEV" --budget "$budget" --calibrate 256 --quiet
done
