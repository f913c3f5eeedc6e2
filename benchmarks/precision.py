"""End to end on SQuAD dev, seconds and F1 side by side (not a test): this model in each precision,
at full length and at a budget, and the same weights in ONNX Runtime, the usual way to serve a
small BERT fast on a CPU (the transformers model exported to ONNX, run in fp32 and with
onnxruntime's int8 dynamic quantization; --no-onnx leaves it out). Every system runs through the
same tokenizing, windowing and answer ranking (QuestionAnswerer.evaluate); only the network
differs. With --margins M, each precision also runs the model under that margin
(docs/selector.md, "Margins"). Each repetition runs every system once, in turn; the table gives
medians.

    pip install -e ".[bench]"
    python benchmarks/precision.py --model dynamic_tinybert/default_model --questions 1000 --repeats 3
    python benchmarks/precision.py --dtypes fp32,bf16 --margins 3 --no-onnx
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from peers import dev_parser, export_onnx, onnx_runtime, peer_reader

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.lengths import parse_margins
from dynamic_tinybert.precision import DTYPES, check_dtype, dtype_name
from dynamic_tinybert.timing import machine


def main() -> int:
    parser = dev_parser(__doc__)
    parser.add_argument("--budget", type=float, default=0.5, help="the budget row of each precision")
    parser.add_argument("--dtypes", default="fp32,bf16,int8", help=f"of {', '.join(DTYPES)}")
    parser.add_argument("--margins", help="a margin row in each precision, e.g. 3 (the learned selector's)")
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    args = parser.parse_args()

    examples = read_squad(args.data)[: args.questions]
    base = QuestionAnswerer.from_pretrained(args.model, dtype="fp32")
    systems = {}
    for dtype in [dtype_name(d.strip()) for d in args.dtypes.split(",") if d.strip()]:
        check_dtype(dtype, torch.device("cpu"))
        qa = base if dtype == "fp32" else QuestionAnswerer.from_pretrained(args.model, dtype=dtype)
        systems[f"dynamic-tinybert {dtype}, full length"] = (qa, {})
        if qa.frontier is not None:
            systems[f"dynamic-tinybert {dtype}, --budget {args.budget}"] = (qa, {"budget": args.budget})
        if args.margins is not None:
            margins = parse_margins(args.margins, qa.num_layers)
            systems[f"dynamic-tinybert {dtype}, --margins {args.margins}"] = (qa, {"margins": margins})
    if not args.no_onnx:
        scratch = Path(tempfile.mkdtemp(prefix="onnx-"))
        fp32, int8 = export_onnx(base.folder, scratch)
        for name, path in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (quantize_dynamic)", int8)):
            systems[name] = (peer_reader(onnx_runtime(path), base), {})

    seconds: dict[str, list[float]] = {name: [] for name in systems}
    f1: dict[str, float] = {}
    for qa, options in systems.values():  # warm-up
        qa.evaluate(examples[:32], **options)
    for repeat in range(args.repeats):
        for name, (qa, options) in systems.items():
            result = qa.evaluate(examples, **options)
            seconds[name].append(result.seconds)
            f1[name] = result.f1
            print(f"repeat {repeat + 1}: {name}: {result.seconds:.2f} s, F1 {result.f1:.2f}", file=sys.stderr)

    first = next(iter(systems))  # ours in the first precision asked for, at full length
    reference = statistics.median(seconds[first])
    print(
        f"\nmodel {args.model}; the first {len(examples)} questions of SQuAD dev, end to end; "
        f"medians of {args.repeats}; {machine()}\n"
    )
    print(f"| system | seconds | vs {first} | F1 |\n|---|---|---|---|")
    for name in systems:
        median = float(np.median(seconds[name]))
        print(f"| {name} | {median:.2f} | {reference / median:.2f}x | {f1[name]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
