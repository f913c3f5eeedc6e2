"""Margins against shares at matched FLOPs (docs/selector.md, "Margins"; not a test).

A share keeps the same part of every window; a margin keeps, in each window, the tokens the
learned selector scores within the margin of that window's best one, so a window whose selector is
sure of one span keeps few and one with several likely spans keeps many. This script runs, on the
same questions and in the same precision,
  - the share points its frontier (frontier.json) picks for --budgets, and
  - each margin configuration asked for (--margins, one per argument: "3" for every layer, or
    one per layer, "inf" keeping every token),
and prints, per row, held-out EM and F1 and the GFLOPs per window: analytic for shares, the
tokens each window really kept for margins (the learned selector scores every layer whose margin
is finite, and its cost counts). "FLOPs" is that mean over the full model's on the same windows.

    python scripts/margin_sweep.py --model M --data M_heldout.json --limit 600 \\
        --margins 2 2.5 3 3.5 4 --json out.json

Choose margins on a held-out split, as the frontier was, and only then run them on SQuAD dev.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.frontier import BudgetError, parse_budgets
from dynamic_tinybert.lengths import format_lengths, format_margins, parse_margins
from dynamic_tinybert.options import UsageError, check_count
from dynamic_tinybert.precision import DTYPES


def configurations(qa: QuestionAnswerer, margins: list[str], budgets: list[float]) -> list[tuple]:
    """("lengths", shares) for the frontier points the budgets pick (a budget below the cheapest
    point is left out, with a note), then ("margins", margins) for each margin configuration; all
    checked before any evaluation."""
    layers = qa.num_layers
    asked = [("margins", parse_margins(text, layers)) for text in margins]
    picked = []
    for budget in budgets if qa.frontier else []:
        try:
            picked.append(qa.choose(budget=budget, margin_points=False).lengths)
        except BudgetError as error:
            print(f"budget {budget:g} left out: {error}", file=sys.stderr)
    return [("lengths", c) for c in dict.fromkeys(picked) if c is not None] + asked


def sweep(
    qa: QuestionAnswerer, examples, margins: list[str], budgets: list[float], progress=print
) -> list[dict]:
    """One record per row: full length, the frontier points the budgets pick, then each margin
    configuration."""
    configs = configurations(qa, margins, budgets)
    windows = qa.tokenizer.encode_examples(examples)
    layers = qa.num_layers
    full = qa.evaluate_windows(examples, windows, None)
    records = [_record("lengths", None, full, full, layers)]
    for kind, config in configs:
        if kind == "lengths":
            result = qa.evaluate_windows(examples, windows, config)
        else:
            result = qa.evaluate_windows(examples, windows, None, margins=config)
        records.append(_record(kind, config, result, full, layers))
        progress(_line(records[-1]))
    return records


def _record(kind: str, config, result, full, layers: int) -> dict:
    return {
        "kind": kind,
        "config": (format_lengths if kind == "lengths" else format_margins)(config, layers),
        "exact_match": result.exact_match,
        "f1": result.f1,
        "gflops_per_window": result.gflops_per_window,
        "flops": result.gflops_per_window / full.gflops_per_window,
    }


def _line(record: dict) -> str:
    return (
        f"{record['kind']:8s} {record['config']:34s} FLOPs {record['flops']:.3f}  "
        f"GFLOPs/window {record['gflops_per_window']:.3f}  "
        f"EM {record['exact_match']:.2f}  F1 {record['f1']:.2f}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="default: the shipped model")
    parser.add_argument("--data", required=True, help="SQuAD-format questions (a held-out split)")
    parser.add_argument("--limit", type=int, help="the first N questions")
    parser.add_argument("--margins", nargs="+", default=["2", "2.5", "3", "3.5", "4"])
    parser.add_argument(
        "--budgets", default="0.25,0.33,0.4,0.5,0.75", help="the frontier points these budgets pick"
    )
    parser.add_argument("--dtype", choices=DTYPES, help="default: the model's")
    parser.add_argument("--json", type=Path, help="write the records here too")
    return parser


def report(args: argparse.Namespace) -> None:
    """The rows on stdout, sorted by FLOPs, and in --json; every option checked before the work."""
    check_count(args.limit, "--limit", note=" (leave it out for every question)")
    budgets = parse_budgets(args.budgets)
    if args.json is not None:
        check_output_file(
            args.json, "--json", example="sweep.json", inputs={"--data": args.data}, make_folders=True
        )
    examples = read_squad(args.data)[: args.limit]
    if not examples:
        raise UsageError(f"{args.data} holds no questions")
    qa = QuestionAnswerer.from_pretrained(args.model, dtype=args.dtype)
    if qa.resolve_selector() != "learned":
        raise UsageError(f"{qa.folder} has no learned selector: margins need its scores")
    print(f"{qa.folder}, {len(examples)} questions of {args.data}, {qa.dtype}")
    records = sweep(qa, examples, args.margins, budgets)
    print("\n| kind | configuration | FLOPs | GFLOPs/window | EM | F1 |\n|---|---|---|---|---|---|")
    for r in sorted(records, key=lambda r: r["flops"]):
        print(
            f"| {r['kind']} | {r['config']} | {r['flops']:.3f} | {r['gflops_per_window']:.3f} "
            f"| {r['exact_match']:.2f} | {r['f1']:.2f} |"
        )
    if args.json:
        text = json.dumps(records, indent=1) + "\n"
        atomic_write(args.json, lambda path: path.write_text(text))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
