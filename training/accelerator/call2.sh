#!/usr/bin/env bash
# Call 2: the smoke run's result, where call 1 started one; unless it failed, the teacher (all its
# parts now here) and the real chain, started in the background with a deadline of SECONDS from now.
set -uo pipefail
SECONDS_LEFT=${1:?usage: call2.sh SECONDS, the time the chain has}
source training/accelerator/common.sh
if [ -e "$ROOT/smoke.log" ]; then
    for _ in $(seq 180); do [ -e "$ROOT/smoke.rc" ] && break; sleep 1; done
    tail -n 25 "$ROOT/smoke.log"
    if [ "$(cat "$ROOT/smoke.rc" 2>/dev/null)" != 0 ]; then
        echo "SMOKE FAILED (or still running): the chain is not started"
        exit 1
    fi
    echo "smoke passed"
fi
[ -e "$M/teacher" ] || { echo "teacher parts missing:"; cat "$ROOT/unpack-teacher.err"; exit 1; }
rm -rf "$ROOT/code" && mkdir -p "$ROOT/code" && cp -r dynamic_tinybert scripts training "$ROOT/code"/
(cd "$ROOT/code" && setsid nohup bash training/accelerator/chain.sh "$SECONDS_LEFT" >"$ROOT/chain.log" 2>&1 </dev/null &)
sleep 15
cat "$ROOT/chain.log"
echo "chain launched"
