"""End to end on SQuAD dev, seconds and F1 side by side (not a test): this model in each precision,
at full length and at a budget, and the same weights in ONNX Runtime, the usual way to serve a
small BERT fast on a CPU (the transformers model exported to ONNX, run in fp32 and with
onnxruntime's int8 dynamic quantization). Every system runs through the same tokenizing, windowing
and answer ranking (QuestionAnswerer.evaluate); only the network differs. Each repetition runs
every system once, in turn; the table gives medians.

    pip install -e ".[bench]"
    python benchmarks/precision.py --model dynamic_tinybert/default_model --questions 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.model import QAOutput
from dynamic_tinybert.precision import DTYPES, check_dtype, dtype_name
from dynamic_tinybert.timing import machine

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxQA(nn.Module):
    """An ONNX Runtime session behind our model's call (full length only), so that the reader's
    windowing and ranking run unchanged around it."""

    def __init__(self, path: Path, config):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, lengths=None, **_) -> QAOutput:
        if lengths is not None:
            raise ValueError("ONNX Runtime runs the full model only")
        feed = dict(zip(INPUTS, (input_ids, attention_mask, token_type_ids), strict=True))
        start, end = self.session.run(None, {k: v.numpy() for k, v in feed.items()})
        return QAOutput(torch.from_numpy(start), torch.from_numpy(end), None, None)


def export_onnx(folder: Path, out: Path) -> tuple[Path, Path]:
    """fp32 and int8 (onnxruntime.quantization.quantize_dynamic) ONNX files of the transformers
    model in `folder`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval().float()
    example = torch.ones(2, 16, dtype=torch.long)
    fp32, int8 = out / "model.onnx", out / "model-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example, example, torch.zeros_like(example)),
            fp32,
            input_names=list(INPUTS),
            output_names=["start_logits", "end_logits"],
            dynamic_axes={
                name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "start_logits", "end_logits")
            },
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dynamic_tinybert/default_model")
    parser.add_argument(
        "--data", default=str(Path(__file__).parents[1] / "../shared/data/squad/dev-v1.1.json")
    )
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.5, help="the budget row of each precision")
    parser.add_argument("--dtypes", default="fp32,bf16,int8", help=f"of {', '.join(DTYPES)}")
    args = parser.parse_args()

    examples = read_squad(args.data)[: args.questions]
    base = QuestionAnswerer.from_pretrained(args.model)
    systems = {}
    for dtype in [dtype_name(d.strip()) for d in args.dtypes.split(",") if d.strip()]:
        check_dtype(dtype, torch.device("cpu"))
        qa = base if dtype == "fp32" else QuestionAnswerer.from_pretrained(args.model, dtype=dtype)
        systems[f"dynamic-tinybert {dtype}, full length"] = (qa, None)
        if qa.frontier is not None:
            systems[f"dynamic-tinybert {dtype}, --budget {args.budget}"] = (qa, args.budget)
    scratch = Path(tempfile.mkdtemp(prefix="onnx-"))
    fp32, int8 = export_onnx(base.folder, scratch)
    for name, path in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (quantize_dynamic)", int8)):
        systems[name] = (QuestionAnswerer(OnnxQA(path, base.model.config), base.tokenizer, base.folder), None)

    seconds: dict[str, list[float]] = {name: [] for name in systems}
    f1: dict[str, float] = {}
    for qa, budget in systems.values():  # warm-up
        qa.evaluate(examples[:32], budget=budget)
    for repeat in range(args.repeats):
        for name, (qa, budget) in systems.items():
            result = qa.evaluate(examples, budget=budget)
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
