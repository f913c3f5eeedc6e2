#!/usr/bin/env bash
# Margin points in the shipped model's frontier (2026-11-27; README "Search and budgets"), on CPU
# (2 cores), from the repository root; nothing is trained:
#   1. constant margins 0.5 .. 6 on the 600 held-out questions the shares were searched on (fp32),
#      the Pareto-optimal ones timed and measured in bf16 and int8 too (the precisions the shares
#      were measured in), added to a copy of the shipped folder's frontier.json (`search
#      --measure-only --margins`; about 9 minutes; log training/logs/margin-points.frontier.txt);
#   2. that frontier.json replaces the shipped one;
#   3. the budgets on the held-out questions the search did not see (1,112), with the frontier
#      before (shares only) and since (log training/logs/margin-points-after-600.txt).
# SQuAD dev and the end-to-end times: the README's Results names their commands.
set -euo pipefail
source "$(dirname "$0")/heldout_files.sh"  # RUNS, TRAIN, $RUNS/heldout.json and heldout-after-600.json
mkdir -p "$RUNS/shares-only"
git archive 15ae579 dynamic_tinybert/default_model | tar -x --strip-components=2 -C "$RUNS/shares-only"
rm -rf "$RUNS/margins-model" && cp -r "$RUNS/shares-only" "$RUNS/margins-model"
dynamic-tinybert search --model "$RUNS/margins-model" --data "$RUNS/heldout.json" --limit 600 --measure-only \
    --margins 0.5 0.75 1 1.25 1.5 1.75 2 2.25 2.5 2.75 3 3.25 3.5 3.75 4 4.5 5 6
cp "$RUNS/margins-model/frontier.json" dynamic_tinybert/default_model/frontier.json

for model in "$RUNS/shares-only" dynamic_tinybert/default_model; do
    for option in "" "--budget 0.75" "--budget 0.5" "--budget 0.33" "--budget 0.25"; do
        # shellcheck disable=SC2086  # the option is two words, or none
        echo "$model [$option]: $(dynamic-tinybert eval --model "$model" --data "$RUNS/heldout-after-600.json" --dtype fp32 $option --json --quiet)"
    done
done
