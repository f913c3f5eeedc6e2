"""Where the time of `eval` goes (not a test): tokenizing and windowing, packing batches, the
network (split by kind of operation with torch's profiler), answer ranking and the metric, on the
first --questions questions of SQuAD dev, in one precision, at full length or a budget.

    python benchmarks/profile_eval.py [--model M] [--questions 1000] [--dtype fp32] [--budget 0.5]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict

import torch
from peers import dev_parser
from torch.profiler import ProfilerActivity, profile

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.data import batches_by_length, collate, gold_answers
from dynamic_tinybert.metrics import squad_scores
from dynamic_tinybert.precision import DTYPES
from dynamic_tinybert.timing import machine

# torch operations by what they do in the network (self time; the rest is "other")
KINDS = {
    "linear maps": ("aten::addmm", "aten::mm", "aten::linear", "quantized::linear_dynamic"),
    "attention (scores, softmax, weighted sum)": (
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::bmm",
        "aten::_softmax",
        "aten::baddbmm",
    ),
    "layer norm": ("aten::native_layer_norm",),
    "GELU": ("aten::gelu",),
    "residual adds": ("aten::add",),
    "copies and gathers (packing tokens, the heads' layout, embeddings, dropping)": (
        "aten::index",
        "aten::index_select",
        "aten::index_copy_",
        "aten::nonzero",
        "aten::cat",
        "aten::copy_",
        "aten::topk",
        "aten::sort",
        "aten::zeros",
        "aten::fill_",
        "aten::embedding",
    ),
}


def phases(qa: QuestionAnswerer, examples, run: dict) -> dict[str, float]:
    """Seconds of each phase of one end-to-end evaluation; `run`: the lengths and margins to run."""
    seconds: dict[str, float] = defaultdict(float)
    began = time.perf_counter()
    windows = qa.tokenizer.encode_examples(examples)
    seconds["tokenizing and windowing"] = time.perf_counter() - began
    flat = [w for ws in windows for w in ws]
    logits = [None] * len(flat)
    with torch.inference_mode():
        for batch in batches_by_length([len(w) for w in flat], 32):
            began = time.perf_counter()
            inputs = collate([flat[i] for i in batch], qa.device)
            seconds["padding batches (collate)"] += time.perf_counter() - began
            began = time.perf_counter()
            out = qa.model(**inputs, **run)
            starts, ends = out.start_logits.float().numpy(), out.end_logits.float().numpy()
            seconds["the network"] += time.perf_counter() - began
            for row, i in enumerate(batch):
                logits[i] = (starts[row, : len(flat[i])], ends[row, : len(flat[i])])
    began = time.perf_counter()
    results = qa.rank_windows(windows, [e.context for e in examples], logits)
    seconds["answer ranking"] = time.perf_counter() - began
    began = time.perf_counter()
    predictions = {e.id: (a[0].text if a else "") for e, a in zip(examples, results, strict=True)}
    squad_scores(gold_answers(examples), predictions)
    seconds["official metric"] = time.perf_counter() - began
    return seconds


def network_kinds(qa: QuestionAnswerer, examples, run: dict) -> dict[str, float]:
    """Self CPU seconds of the network's operations by kind, over every batch."""
    windows = [w for ws in qa.tokenizer.encode_examples(examples) for w in ws]
    batches = [
        collate([windows[i] for i in b], qa.device) for b in batches_by_length([len(w) for w in windows], 32)
    ]
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for inputs in batches:
            qa.model(**inputs, **run)
    kind_of = {op: kind for kind, ops in KINDS.items() for op in ops}
    out: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        out[kind_of.get(event.key, "other")] += event.self_cpu_time_total / 1e6
    return out


def main() -> int:
    parser = dev_parser(__doc__)
    parser.add_argument("--dtype", default="fp32", choices=DTYPES)
    parser.add_argument("--budget", type=float)
    args = parser.parse_args()
    qa = QuestionAnswerer.from_pretrained(args.model, dtype=args.dtype)
    choice = qa.choose(budget=args.budget)  # a frontier point: shares or margins
    configuration = {"lengths": choice.lengths, "margins": choice.margins}
    examples = read_squad(args.data)[: args.questions]
    phases(qa, examples[:64], configuration)  # warm-up
    runs = [phases(qa, examples, configuration) for _ in range(args.repeats)]
    median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    total = sum(median.values())
    budget = f"--budget {args.budget}" if args.budget else "full length"
    print(
        f"\n{args.model}, {args.dtype}, {budget}; the first {len(examples)} questions of SQuAD dev; "
        f"medians of {args.repeats}; {machine()}\n"
    )
    print("| phase | seconds | share |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.2f} | {value / total:.0%} |")
    print(f"| all | {total:.2f} | |")
    kinds = network_kinds(qa, examples, configuration)
    inside = sum(kinds.values())
    print("\nThe network by kind of operation (self CPU time under torch's profiler, one pass):\n")
    print("| operations | share of the network |\n|---|---|")
    for name in [*KINDS, "other"]:
        print(f"| {name} | {kinds.get(name, 0.0) / inside:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
