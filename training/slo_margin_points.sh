#!/usr/bin/env bash
# The server's SLO mode with margin points in its ladder (`serve --slo-margin-points`) against the
# ladder of shares alone (2026-11-27; README, Serving), on CPU (2 cores, fp32, the shipped model),
# from the repository root: targets 1,000 and 2,000 ms, 32 clients, 60 s per row (enough
# requests for the controller to settle), each pair twice, alternating (log
# training/logs/slo-margin-points.txt, about 15 minutes).
set -euo pipefail
ARGS=(--model dynamic_tinybert/default_model --data ../shared/data/squad/dev-v1.1.json --budgets ''
      --concurrency 32 --requests 10000 --seconds 60)
for repeat in 1 2; do
    for slo in 1000 2000; do
        echo "== repeat $repeat, SLO $slo ms"
        python scripts/loadtest.py "${ARGS[@]}" --latency-slo "$slo" | tail -1
        python scripts/loadtest.py "${ARGS[@]}" --latency-slo "$slo" --slo-margin-points | tail -1
    done
done
