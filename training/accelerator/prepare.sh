#!/usr/bin/env bash
# Here, before the lease: everything the upload calls carry, packed and shared out among
# .xfer/c1, .xfer/c2, ... (git ignores .xfer; each call names its folder in `carry`).
# Order: wheels and training data (call 1 needs them for the smoke run), the teacher in int8
# (so that it is whole after call 2 and its fine-tuning can start), the student, SQuAD dev.
# Parts of 1 MB (PART_MB) fill each call to the brim: with 4 MB the teacher's last part and its
# manifest spilled into call 3 on 2026-11-30, and the teacher is whole only once both are there.
# Run it from the checkout state the calls will send (without the shipped model, which would
# fill a call by itself): the room in each call is 64 MiB less that checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
TEACHER=${TEACHER:-.pretrained/all-mpnet-base-v2}
STUDENT=${STUDENT:-dynamic_tinybert/default_model}
# more students' starts, NAME=FOLDER each (chain.sh's STARTS names them), sent in fp16 after the rest
MORE_STUDENTS=${MORE_STUDENTS:-}
TRAIN=${TRAIN:-../shared/data/train}
DEV=${DEV:-../shared/data/squad/dev-v1.1.json}
WHEELS=${WHEELS:-}  # a folder of the wheels the chain was tested with (training/accelerator.md)
X=${XFER:-.xfer}
rm -rf "$X"
mkdir -p "$X/parts"
$PY scripts/accelerator.py pack "$TRAIN"/*.json "$X/parts/train" --xz --part-mb 60
$PY scripts/accelerator.py pack "$TEACHER" "$X/parts/teacher" --weights int8 --xz --part-mb "${PART_MB:-1}"
$PY scripts/accelerator.py pack "$STUDENT" "$X/parts/student" --part-mb "${PART_MB:-1}"
$PY scripts/accelerator.py pack "$DEV" "$X/parts/dev" --xz
more=()
for start in $MORE_STUDENTS; do
    $PY scripts/accelerator.py pack "${start#*=}" "$X/parts/${start%%=*}" --weights fp16 --part-mb "${PART_MB:-1}"
    more+=("$X/parts/${start%%=*}".*)
done
wheels=()  # copied: `calls` moves the files it shares out, and the wheels stay for another run
[ -n "$WHEELS" ] && cp "$WHEELS"/*.whl "$X/parts/" && wheels=("$X"/parts/*.whl)
$PY scripts/accelerator.py calls "$X" "${wheels[@]}" "$X"/parts/train.* "$X"/parts/teacher.* \
    "$X"/parts/student.* "$X"/parts/dev.* "${more[@]}" --limit-mb "${LIMIT_MB:-64}" ${RESERVE_MB:+--reserve-mb $RESERVE_MB}
rmdir "$X/parts"
