#!/usr/bin/env bash
# Every later call: take in what this call carried, follow the chain for up to SECONDS, and
# once it has ended put the named stage folders (fp16 weights, parts of 16 MB) and the logs under
# $OUT, for this machine to fetch (at most 8 files of 16 MiB per call: one student per call).
# A stage of a student start is named START/STAGE (chain.sh's STARTS), e.g. student/selector.
set -uo pipefail
WAIT=${1:?usage: poll.sh SECONDS [STAGE...]}
shift
source training/accelerator/common.sh
began=$(date +%s) shown=0
while [ ! -e "$R/DONE" ] && [ $(( $(date +%s) - began )) -lt "$WAIT" ]; do
    lines=$(wc -l <"$ROOT/chain.log")
    [ "$lines" -gt "$shown" ] && tail -n +$((shown + 1)) "$ROOT/chain.log" && shown=$lines
    sleep 5
done
tail -n +$((shown + 1)) "$ROOT/chain.log"
for f in "$R"/*/metrics.jsonl "$R"/*/*/metrics.jsonl; do
    [ -e "$f" ] || continue
    echo "== $f"
    grep -E '"event": "(fitted to time|out of time)"|heldout_' "$f" | tail -n 4 | cut -c1-300
    grep '"loss"' "$f" | tail -n 1 | cut -c1-300
done
if [ ! -e "$R/DONE" ]; then
    echo "chain still running"
    exit 0
fi
mkdir -p "${OUT:?}"
tar czf "$OUT/logs.tgz" -C "$ROOT" $(cd "$ROOT" && ls chain.log smoke.log recipe/*/metrics.jsonl recipe/*/*/metrics.jsonl recipe/*.json recipe/*.log 2>/dev/null)
for stage in "$@"; do
    if [ -e "$R/$stage/model.safetensors" ]; then
        $PY scripts/accelerator.py pack "$R/$stage" "$OUT/$stage" --weights fp16 --part-mb 16
    else
        echo "no $stage model to fetch"
    fi
done
ls -la "$OUT"
