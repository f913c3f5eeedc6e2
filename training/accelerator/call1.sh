#!/usr/bin/env bash
# Call 1 (starts the machine): what it is, the first parts, and with SMOKE=1 a smoke run of the
# whole chain on tiny random models on the accelerator, in the background (call2.sh reads its
# result). The smoke run cost 100 s of a 15-minute lease on 2026-11-26 (five interpreters starting
# CUDA); run it after changes to training code that the GPU has not yet run.
set -uo pipefail
source training/accelerator/common.sh
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
if [ "${SMOKE:-0}" = 1 ]; then
    rm -rf "$ROOT/smoke-code" && mkdir -p "$ROOT/smoke-code" && cp -r dynamic_tinybert scripts tests training "$ROOT/smoke-code"/
    (cd "$ROOT/smoke-code" && setsid nohup bash training/accelerator/smoke.sh >"$ROOT/smoke.log" 2>&1 </dev/null &)
    echo "smoke launched"
fi
ls "$X" | sed 's/^/carried: /' | head -40
