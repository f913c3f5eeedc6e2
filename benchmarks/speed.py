"""Speed of drop-and-restore against transformers on SQuAD dev windows (not a test).

For one checkpoint, on the windows of the first --questions questions of SQuAD dev:
  - this model at full length and at geometric length configurations near 3/4, 1/2 and 1/3 of
    the full FLOPs (each layer keeps a fixed share of what the previous one kept);
  - the same weights in transformers, with dynamic padding (the strongest baseline: the same
    batches, sorted by length, padded to their longest window) and padded to 384 tokens.
Latency: one window at a time, median over --latency-windows windows. Throughput: every window,
in batches of 32 sorted by length. Each repetition runs every system once, interleaved, and the
ratios are taken inside a repetition; the table gives medians over --repeats repetitions.

With --dtypes fp32,bf16,int8 the model and the transformers baseline also run in those
precisions (dynamic_tinybert/precision.py; transformers in bf16 or with the same dynamic
quantization of its encoder's linear maps). With --onnx, the same weights in ONNX Runtime too,
in fp32 and int8 (benchmarks/peers.py; `pip install -e ".[bench]"`).

Beside each row's speed: its F1 on the first --f1-questions questions of SQuAD dev (1,000 by
default), end to end through the same reader, so that speed and accuracy are read together.

    python benchmarks/speed.py --model M [--dtypes fp32,bf16] [--onnx] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from peers import export_onnx, onnx_runtime, peer_reader, transformers_in

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.data import batches_by_length, collate
from dynamic_tinybert.frontier import flops_ratio
from dynamic_tinybert.lengths import encoder_gflops, format_lengths, geometric_lengths, mean_gflops
from dynamic_tinybert.precision import dtype_name
from dynamic_tinybert.timing import machine

TARGETS = (0.75, 0.5, 1 / 3)


def lengths_for_ratio(config, target: float, scorer_macs: int = 0):
    """The geometric configuration whose FLOPs ratio (the frontier's, frontier.flops_ratio) is
    closest to target."""
    low, high = 0.05, 1.0
    for _ in range(40):
        keep = (low + high) / 2
        if flops_ratio(config, geometric_lengths(keep, config.num_hidden_layers), scorer_macs) > target:
            high = keep
        else:
            low = keep
    shares = geometric_lengths((low + high) / 2, config.num_hidden_layers)
    return tuple(round(share, 3) for share in shares)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--data", default=str(Path(__file__).parents[1] / "../shared/data/squad/dev-v1.1.json")
    )
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--latency-windows", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--selector", choices=("attention", "learned"), help="default: learned where the model has one"
    )
    parser.add_argument("--dtypes", default="fp32", help="precisions to run, e.g. fp32,bf16,int8")
    parser.add_argument("--onnx", action="store_true", help="ONNX Runtime rows, fp32 and int8")
    parser.add_argument("--f1-questions", type=int, default=1000, help="F1 of each row on this many")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtypes = [dtype_name(d.strip()) for d in args.dtypes.split(",") if d.strip()]

    qa = QuestionAnswerer.from_pretrained(args.model, dtype="fp32")
    config = qa.model.config
    selector, scorer = qa.resolve_selector(args.selector), qa.scorer_macs(args.selector)
    hf = transformers_in("fp32", qa.folder)
    everything = read_squad(args.data)
    examples = everything[: args.questions]
    scored = everything[: args.f1_questions]
    scored_windows = qa.tokenizer.encode_examples(scored)
    windows = [w for ws in qa.tokenizer.encode_examples(examples) for w in ws]
    rng = np.random.default_rng(0)
    sample = [
        windows[i] for i in rng.choice(len(windows), min(args.latency_windows, len(windows)), replace=False)
    ]
    batches = [
        collate([windows[i] for i in b], qa.device)
        for b in batches_by_length([len(w) for w in windows], args.batch_size)
    ]
    padded = [_pad_to(batch, 384) for batch in batches]
    singles = [collate([w], qa.device) for w in sample]
    singles_padded = [_pad_to(s, 384) for s in singles]

    configs = {"full": None} | {f"~{t:.2f} FLOPs": lengths_for_ratio(config, t, scorer) for t in TARGETS}
    systems: dict[str, tuple[Callable, list, list]] = {}
    # per row: (lengths, our full-length row and the transformers row of the same dtype)
    meta: dict[str, tuple] = {}
    f1: dict[str, float] = {}  # end to end on the scored questions

    def peer(name: str, network, baseline: str, batch_list=batches, single_list=singles) -> None:
        systems[name] = (network, batch_list, single_list)
        meta[name] = (None, None, baseline)
        f1[name] = peer_reader(network, qa).evaluate_windows(scored, scored_windows, None).f1

    for dtype in dtypes:
        ours = qa if dtype == "fp32" else QuestionAnswerer.from_pretrained(args.model, dtype=dtype)
        suffix = "" if dtype == "fp32" else f", {dtype}"
        for name, lengths in configs.items():
            row = f"dynamic-tinybert {name}{suffix}"
            systems[row] = (
                lambda b, m=ours.model, L=lengths: m(**b, lengths=L, selector=selector),
                batches,
                singles,
            )
            meta[row] = (lengths, f"dynamic-tinybert full{suffix}", f"transformers, dynamic padding{suffix}")
            f1[row] = ours.evaluate_windows(scored, scored_windows, lengths, selector=selector).f1
        theirs = hf if dtype == "fp32" else transformers_in(dtype, qa.folder)
        peer(f"transformers, dynamic padding{suffix}", theirs, f"transformers, dynamic padding{suffix}")
    first = f"transformers, dynamic padding{'' if dtypes[0] == 'fp32' else ', ' + dtypes[0]}"
    if "fp32" in dtypes:
        peer("transformers, padded to 384", hf, first, padded, singles_padded)
    if args.onnx:
        fp32, int8 = export_onnx(qa.folder, Path(tempfile.mkdtemp(prefix="onnx-")))
        peer("ONNX Runtime fp32, dynamic padding", onnx_runtime(fp32), first)
        peer("ONNX Runtime int8 (quantize_dynamic), dynamic padding", onnx_runtime(int8), first)

    runs: dict[str, dict[str, list[float]]] = {name: {"latency": [], "throughput": []} for name in systems}
    with torch.inference_mode():
        for run, batch_list, single_list in systems.values():  # warm-up
            run(batch_list[-1])
            run(single_list[0])
        for repeat in range(args.repeats):
            for name, (run, batch_list, single_list) in systems.items():
                times = []
                for single in single_list:
                    began = time.perf_counter()
                    run(single)
                    times.append(time.perf_counter() - began)
                runs[name]["latency"].append(statistics.median(times) * 1000)
                began = time.perf_counter()
                for batch in batch_list:
                    run(batch)
                runs[name]["throughput"].append(len(windows) / (time.perf_counter() - began))
                print(
                    f"repeat {repeat + 1}: {name}: {runs[name]['latency'][-1]:.1f} ms, "
                    f"{runs[name]['throughput'][-1]:.1f} windows/s",
                    file=sys.stderr,
                )

    rows = []
    tokens = [len(w) for w in windows]
    full_gflops = mean_gflops(config, tokens)
    for name in systems:
        lengths, full_row, baseline = meta[name]
        ours = full_row is not None
        # GFLOPs per window on these windows; the ratio is the frontier's (budgets use it)
        if name.endswith("384"):
            gflops = encoder_gflops(config, 384)
            ratio = gflops / full_gflops
        else:
            gflops = mean_gflops(config, tokens, lengths, scorer if ours else 0)
            ratio = flops_ratio(config, lengths, scorer if ours else 0)
        throughput = runs[name]["throughput"]
        full = runs[full_row]["throughput"] if ours else throughput
        vs_full = [t / f for t, f in zip(throughput, full, strict=True)]
        vs_baseline = [t / b for t, b in zip(throughput, runs[baseline]["throughput"], strict=True)]
        rows.append(
            {
                "system": name,
                "lengths": format_lengths(lengths, config.num_hidden_layers) if ours else "",
                "gflops_per_window": gflops,
                "flops_ratio": ratio,
                "latency_ms_batch1": statistics.median(runs[name]["latency"]),
                "windows_per_s_batch32": statistics.median(throughput),
                "speedup_vs_transformers_dynamic": statistics.median(vs_baseline),
                # 1.0 when every FLOP saved is time saved
                "speedup_per_flops_reduction": statistics.median(vs_full) * ratio if ours else None,
                "f1": f1[name],
            }
        )
    print(
        f"\nmodel {args.model}, {selector} selector; {len(windows)} windows of the first {len(examples)} "
        f"questions of SQuAD dev, mean {np.mean([len(w) for w in windows]):.0f} tokens; F1 on the first "
        f"{len(scored)} questions, end to end; {machine()}\n"
    )
    print(
        "| system | lengths | GFLOPs/window | FLOPs vs full | latency batch 1 (ms) | windows/s batch 32 "
        "| speedup vs transformers dynamic (same dtype) | speedup / FLOPs reduction | F1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['lengths']} | {r['gflops_per_window']:.2f} | {r['flops_ratio']:.2f} | "
            f"{r['latency_ms_batch1']:.1f} | {r['windows_per_s_batch32']:.1f} | "
            f"{r['speedup_vs_transformers_dynamic']:.2f}x | {_maybe(r['speedup_per_flops_reduction'])} | "
            f"{r['f1']:.2f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"machine": machine(), "model": str(args.model), "rows": rows, "runs": runs}, indent=1)
        )
    return 0


def _maybe(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _pad_to(batch: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """The batch padded with [PAD] (id 0) to `width` tokens, as with padding="max_length"."""
    pad = width - batch["input_ids"].shape[1]
    return {k: torch.nn.functional.pad(v, (0, pad)) for k, v in batch.items()}


if __name__ == "__main__":
    sys.exit(main())
