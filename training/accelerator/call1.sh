#!/usr/bin/env bash
# Call 1 (starts the machine): what it is, the first parts, and a smoke run of the whole chain on
# tiny random models on the accelerator, in the background (call2.sh reads its result).
set -uo pipefail
source training/accelerator/common.sh
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
rm -rf "$ROOT/smoke-code" && mkdir -p "$ROOT/smoke-code" && cp -r dynamic_tinybert scripts tests training "$ROOT/smoke-code"/
(cd "$ROOT/smoke-code" && setsid nohup bash training/accelerator/smoke.sh >"$ROOT/smoke.log" 2>&1 </dev/null &)
ls "$X" | sed 's/^/carried: /' | head -40
echo "smoke launched"
