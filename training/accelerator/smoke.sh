#!/usr/bin/env bash
# Every stage of the recipe for a few steps on tiny random models (an MPNet teacher through
# transformers, a BERT student), on this machine's accelerator, then the teacher's evaluation
# as chain.sh runs it. Writes its exit status to $ROOT/smoke.rc.
set -uo pipefail
source training/accelerator/common.sh
S=$ROOT/smoke
rm -rf "$S" && mkdir -p "$S"
run() {
    $PY - "$S" <<'PY' || return 1
import sys
from pathlib import Path
from tests.conftest import make_checkpoint, make_mpnet
out = Path(sys.argv[1])
make_mpnet(out / "teacher")
make_checkpoint(out / "student", seed=2, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64)
PY
    data=$(ls -S "$D"/train/*.json | tail -n 1)  # the smallest training file
    $PY scripts/recipe.py --teacher "$S/teacher" --student "$S/student" --data "$data" \
        --out "$S/recipe" --smoke --minutes lengthdrop=1 --skip-search || return 1
    $PY -m dynamic_tinybert eval --model "$S/recipe/finetune" --data "$data" \
        --limit 32 --device "${DEVICE:-cuda}" --json --quiet || return 1
}
run
echo $? >"$ROOT/smoke.rc"
