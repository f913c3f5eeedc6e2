"""The model's forward in two source trees, on the same windows (not a test): is a change faster?

Each run is a fresh process that imports `dynamic_tinybert` from one tree and times, on the
windows of the first --questions questions of SQuAD dev, the full model and the configuration
asked for (--margins or --lengths), as the search and speed.py time them (dynamic_tinybert.timing):
the median latency of one window at a time over the first --latency-windows windows, and the
throughput of all of them in batches of --batch-size sorted by length. A run reports the
configuration's speedup over the full model, the median of --repeats rounds inside the process,
so the machine's drift between processes cancels. The trees run alternately, --pairs times each; the
last lines give each tree's median speedup and time per window.

    git worktree add /tmp/before HEAD~1
    python benchmarks/forward_ab.py /tmp/before . --margins 3.25 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from peers import dev_parser


def parse(argv: list[str] | None):
    parser = dev_parser(__doc__)
    parser.add_argument("trees", nargs="*", type=Path, help="source trees (checkouts) to compare")
    parser.add_argument("--margins", help="a margin for every layer, or one per layer: r1,...,rL")
    parser.add_argument("--lengths", help="the shares each layer keeps: r1,...,rL")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each tree, alternating")
    parser.add_argument("--latency-windows", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # one run, in this tree
    args = parser.parse_args(argv)
    if args.child is None and len(args.trees) < 1:
        parser.error("give one source tree or more")
    if (args.margins is None) == (args.lengths is None):
        parser.error("give --margins or --lengths")
    try:
        args.configuration = _configuration(args)
    except ValueError:
        parser.error(
            f"--margins or --lengths {args.margins or args.lengths!r}: give numbers such as 3 or 1,0.8,0.5"
        )
    return args


def _configuration(args) -> dict[str, float | list[float]]:
    """The model's options for --margins or --lengths: one number, or one per layer."""
    name, text = ("margins", args.margins) if args.margins else ("lengths", args.lengths)
    values = [float(v) for v in text.split(",")]
    return {name: values[0] if len(values) == 1 else values}


def child(args) -> dict[str, float]:
    """One run inside `args.child`'s tree: the speedups, the latency and the throughput."""
    import torch

    import dynamic_tinybert
    from dynamic_tinybert import QuestionAnswerer, read_squad
    from dynamic_tinybert.timing import latency_ms, throughput

    if not Path(dynamic_tinybert.__file__).resolve().is_relative_to(args.child.resolve()):
        raise SystemExit(f"{args.child} holds no dynamic_tinybert package (got {dynamic_tinybert.__file__})")
    torch.set_num_threads(args.threads)
    qa = QuestionAnswerer.from_pretrained(args.model)
    examples = read_squad(args.data)[: args.questions]
    windows = [w for ws in qa.tokenizer.encode_examples(examples) for w in ws]
    singles, size, device = windows[: args.latency_windows], args.batch_size, qa.device
    both = ({"lengths": None}, {"lengths": None, **args.configuration})  # full model, configuration
    rounds = []
    for _ in range(args.repeats):
        full_ms, ms = (latency_ms(qa.model, singles, device=device, **o) for o in both)
        full_rate, rate = (throughput(qa.model, windows, device=device, batch_size=size, **o) for o in both)
        rounds.append({"full_ms": full_ms, "ms": ms, "full_rate": full_rate, "rate": rate})
    return {
        "speedup_batch1": statistics.median(r["full_ms"] / r["ms"] for r in rounds),
        f"speedup_batch{size}": statistics.median(r["rate"] / r["full_rate"] for r in rounds),
        "latency_ms_batch1": statistics.median(r["ms"] for r in rounds),
        f"windows_per_s_batch{size}": statistics.median(r["rate"] for r in rounds),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    options = [f"--model={args.model}", f"--data={args.data}", f"--questions={args.questions}"]
    options += [f"--repeats={args.repeats}", f"--latency-windows={args.latency_windows}"]
    options += [f"--batch-size={args.batch_size}", f"--threads={args.threads}"]
    options += [f"--margins={args.margins}"] if args.margins else [f"--lengths={args.lengths}"]
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for pair in range(args.pairs):
        for tree in args.trees:
            out = subprocess.run(
                [sys.executable, __file__, *options, "--child", str(tree)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(tree.resolve())},  # its package before the installed one
            )
            if out.returncode != 0:
                print(f"{tree}: the run failed:\n{out.stderr.strip()}", file=sys.stderr)
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[tree].append(result)
            print(f"pair {pair + 1} {tree}: {_row(result)}", flush=True)
    for tree, results in runs.items():
        medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"median of {len(results)} {tree}: {_row(medians)}")
    return 0


def _row(result: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in result.items())


if __name__ == "__main__":
    sys.exit(main())
