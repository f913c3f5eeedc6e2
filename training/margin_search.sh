#!/usr/bin/env bash
# Per-layer margins evolved for the shipped model's frontier (2026-11-27; docs/selector.md,
# "Margins per layer"), on CPU (2 cores), from the repository root; nothing is trained:
#   1. from the frontier shipped before (commit 615a40c: shares, and constant margins as margin
#      points), `search --measure-only --margin-iterations 6` evolves per-layer margins on the 600
#      held-out questions the shares were searched on (fp32): 24 constant margins 0.25 .. 6, then
#      6 iterations of 10 mutations and 10 crossovers of the Pareto-optimal ones; those in the
#      Pareto frontier are timed and measured in bf16 and int8 too, as the other points were
#      (about 35 minutes; log training/logs/margin-search.frontier.txt);
#   2. the budgets on the held-out questions the search did not see (1,112), with the frontier
#      before and after (log training/logs/margin-search-after-600.txt).
# Whether it ships, SQuAD dev and the end-to-end times: the README's Results names their commands.
set -euo pipefail
source "$(dirname "$0")/heldout_files.sh"  # RUNS, TRAIN, $RUNS/heldout.json and heldout-after-600.json
rm -rf "$RUNS/constant-margins" "$RUNS/margin-evolve-model"
mkdir -p "$RUNS/constant-margins"
git archive 615a40c dynamic_tinybert/default_model | tar -x --strip-components=2 -C "$RUNS/constant-margins"
cp -r "$RUNS/constant-margins" "$RUNS/margin-evolve-model"
dynamic-tinybert search --model "$RUNS/margin-evolve-model" --data "$RUNS/heldout.json" --limit 600 --measure-only \
    --margin-iterations 6 --population 24 --mutations 10 --crossovers 10 --seed 0

for model in "$RUNS/constant-margins" "$RUNS/margin-evolve-model"; do
    for option in "--budget 0.75" "--budget 0.6" "--budget 0.5" "--budget 0.4" "--budget 0.33" "--budget 0.25"; do
        # shellcheck disable=SC2086  # the option is two words
        echo "$model [$option]: $(dynamic-tinybert eval --model "$model" --data "$RUNS/heldout-after-600.json" --dtype fp32 $option --json --quiet)"
    done
done
