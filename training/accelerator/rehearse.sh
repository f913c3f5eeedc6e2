#!/usr/bin/env bash
# The whole lease rehearsed here, on tiny random models and the CPU: prepare.sh, then each call as
# the accelerator runs it (with only that call's folder carried), then the students fetched and
# reassembled. tests/test_accelerator.py runs it; training/accelerator.md gives the real calls.
set -euo pipefail
W=${1:?usage: rehearse.sh WORKDIR}
cd "$(dirname "$0")/../.."
export PYTHON=${PYTHON:-python} ACCEL_ROOT=$W/root DEVICE=cpu STARTUP=1 CARRIED=$W/carried TRAIN_ARGS="--limit 48" SMOKE=1
# as accelerator.md runs it: two students' starts distilled side by side, the second under another
# name with another batch size, no LengthDrop
export STARTS="student=5e-5 b8:student2=1e-4@8" LENGTHDROP=0
mkdir -p "$W/in/train"
$PYTHON - "$W/in" <<'PY'
import json, sys
from pathlib import Path
from tests.conftest import SHARED_DATA, make_checkpoint, make_mpnet
out = Path(sys.argv[1])
make_mpnet(out / "teacher")
make_checkpoint(out / "student", seed=2, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64)
make_checkpoint(out / "student2", seed=4, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=64)
for source, target, n in (("train/squadshifts_new_wiki.json", "train/small.json", 96), ("squad/dev-v1.1.json", "dev.json", 24)):
    article = json.loads((SHARED_DATA / source).read_text())["data"][0]
    paragraphs, count = [], 0
    for paragraph in article["paragraphs"]:
        paragraphs.append(paragraph)
        count += len(paragraph["qas"])
        if count >= n:
            break
    (out / target).write_text(json.dumps({"data": [dict(article, paragraphs=paragraphs)]}))
PY
XFER=$W/xfer TEACHER=$W/in/teacher STUDENT=$W/in/student MORE_STUDENTS="student2=$W/in/student2" \
    TRAIN=$W/in/train DEV=$W/in/dev.json \
    PART_MB=0.1 LIMIT_MB=${LIMIT_MB:-0.3} RESERVE_MB=0 bash training/accelerator/prepare.sh
carry() { rm -rf "$CARRIED" && mkdir -p "$CARRIED" && for c in "$@"; do cp -r "$W/xfer/$c" "$CARRIED"/; done; }
calls=$(ls "$W/xfer" | wc -l)
echo "== call 1"; carry c1; bash training/accelerator/call1.sh
echo "== call 2"; carry c2; bash training/accelerator/call2.sh 600
for i in $(seq 3 "$calls"); do
    echo "== call $i"; carry "c$i"; OUT=$W/out$i bash training/accelerator/poll.sh 5
done
echo "== following the chain"; carry; OUT=$W/out1 bash training/accelerator/poll.sh 900 student/selector
echo "== fetching"; OUT=$W/out2 bash training/accelerator/poll.sh 5 b8/selector
for i in 1 2; do
    for parts in "$W/out$i"/*/selector.json; do
        start=$(basename "$(dirname "$parts")")
        $PYTHON scripts/accelerator.py unpack "${parts%.json}" "$W/fetched/$start"
    done
done
