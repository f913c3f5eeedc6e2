"""Markdown tables about a model's searched frontier (not a test).

1. On the held-out split: each constant-ratio configuration (every layer keeps the same share)
   against the frontier's most accurate point at no more FLOPs, shares or margins (a margin
   point's FLOPs: the mean the held-out windows kept).
2. In each precision the frontier was measured in (`search --measure-dtypes`): the points that
   budgets pick there, with their held-out F1 and speed against full length in that precision.
3. With --dev: the points that budgets pick, with SQuAD dev EM/F1 and their measured speed
   (scripts/results_table.py gives the same rows beside the teacher's).

    python scripts/frontier_report.py --model M [--dev ../shared/data/squad/dev-v1.1.json \
        [--budgets 1,0.75,0.5,0.33,0.25] [--dev-limit N]] [--plot frontier.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.frontier import BudgetError, Frontier, parse_budgets
from dynamic_tinybert.options import UsageError, check_count
from dynamic_tinybert.precision import DTYPES

PLOT_SUFFIXES = (".png", ".svg", ".pdf")  # as `dynamic-tinybert plot --out` takes them


def as_searched(frontier: Frontier) -> Frontier:
    """The frontier as its search left it: picks by the F1 on the search's own questions, not by
    a confirmation's on others (`search --confirm`)."""
    searched = Frontier.from_dict(frontier.to_dict())
    for point in [*searched.points, *searched.margin_points]:
        point.confirmed_exact_match = point.confirmed_f1 = None
    return searched


def heldout_table(frontier) -> list[str]:
    """On the search's questions: constant ratios against the point most accurate there."""
    frontier = as_searched(frontier)
    rows = [
        "| constant share | FLOPs | held-out F1 | frontier point, no more FLOPs | its FLOPs | its F1 "
        "| gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for constant in frontier.constant_ratio:
        if constant.is_full:
            continue
        try:
            best = frontier.pick(budget=constant.flops_ratio)
        except BudgetError:
            rows.append(
                f"| {constant.lengths[0]:g} | {constant.flops_ratio:.3f} | {constant.heldout_f1:.2f} | "
                "(none that cheap) | | | |"
            )
            continue
        rows.append(
            f"| {constant.lengths[0]:g} | {constant.flops_ratio:.3f} | {constant.heldout_f1:.2f} | "
            f"{best.label} | {best.flops_ratio:.3f} | {best.heldout_f1:.2f} | "
            f"{best.heldout_f1 - constant.heldout_f1:+.2f} |"
        )
    return rows


def dtype_table(frontier, budgets: list[float]) -> list[str]:
    """What the budgets pick in each precision (by the confirmed F1 where the frontier has one,
    a column then), with their held-out F1 and speed there."""
    confirmed = frontier.full.confirmed_f1 is not None
    rows = [
        "| precision | budget | lengths | FLOPs | held-out F1 | vs full | "
        + ("confirmed F1 | " if confirmed else "")
        + "latency b1 (ms) | windows/s b32 | speedup b32 |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if confirmed else ""),
    ]
    for dtype in frontier.dtypes:
        full = frontier.measured(frontier.full, dtype)
        for budget in budgets:
            try:
                point = frontier.pick(budget=budget, dtype=dtype)
            except BudgetError as error:
                rows.append(f"| {dtype} | {budget:g} | {error} | | | | | | |" + (" |" if confirmed else ""))
                continue
            m = frontier.measured(point, dtype)
            rows.append(
                f"| {dtype} | {budget:g} | {point.label} | {point.flops_ratio:.3f} | {m.heldout_f1:.2f} | "
                f"{m.heldout_f1 - full.heldout_f1:+.2f} | "
                + (f"{frontier.confirmed_f1(point, dtype):.2f} | " if confirmed else "")
                + f"{m.latency_ms_batch1:.1f} | "
                f"{m.throughput_batch32:.1f} | {m.throughput_batch32 / full.throughput_batch32:.2f}x |"
            )
    return rows


def dev_table(qa: QuestionAnswerer, examples, budgets: list[float]) -> list[str]:
    rows = [
        "| budget | lengths | FLOPs | held-out F1 | dev EM | dev F1 | dev GFLOPs/window | latency b1 (ms) "
        "| windows/s b32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in budgets:
        try:
            point = qa.frontier.pick(budget=budget)
        except BudgetError as error:
            rows.append(f"| {budget:g} | {error} | | | | | | | |")
            continue
        result = qa.evaluate(examples, budget=budget, progress=True)
        rows.append(
            f"| {budget:g} | {point.label} | {point.flops_ratio:.3f} | {point.heldout_f1:.2f} | "
            f"{result.exact_match:.2f} | {result.f1:.2f} | {result.gflops_per_window:.2f} | "
            f"{point.latency_ms_batch1:.1f} | {point.throughput_batch32:.1f} |"
        )
    return rows


def check_plot(path: Path) -> None:
    """Refuse a --plot that cannot be written now, before any work (its folders are made)."""
    if path.is_dir():
        raise UsageError(f"--plot {path} is a folder; give a file name, e.g. {path / 'frontier.png'}")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot {path}: give a file name ending in .png (or .svg, .pdf)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--plot {path}: cannot make the folder {path.parent} ({error.strerror})") from None
    check_output_file(path, "--plot")


def write_plot(frontier: Frontier, path: Path, title: str) -> Path:
    """The frontier's picture at `path`, whole or not at all."""
    from dynamic_tinybert.plot import plot_frontier

    try:
        return plot_frontier(frontier, path, title=title)
    except ImportError as error:  # no matplotlib: its message says what to install
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"--plot {path}: cannot write it: {error.strerror or error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--dev")
    parser.add_argument("--dtype", choices=DTYPES, help="precision (default: the model's)")
    parser.add_argument("--budgets", default="1,0.75,0.5,0.33,0.25")
    parser.add_argument("--dev-limit", type=int, help="only the first N dev questions")
    parser.add_argument("--plot", type=Path, help="a picture of the frontier: .png, .svg or .pdf")
    return parser


def report(args: argparse.Namespace) -> None:
    """The tables on stdout, and the plot; every option is checked before the model loads."""
    budgets = parse_budgets(args.budgets)
    check_count(args.dev_limit, "--dev-limit", note=" (leave it out for all of dev)")
    if args.dev_limit is not None and args.dev is None:
        raise UsageError("--dev-limit limits the questions of --dev: give --dev too")
    if args.plot:
        check_plot(args.plot)
    examples = read_squad(args.dev)[: args.dev_limit] if args.dev else None
    qa = QuestionAnswerer.from_pretrained(args.model, dtype=args.dtype)
    if qa.frontier is None:
        raise UsageError(f"{args.model} has no frontier.json; run dynamic-tinybert search first")
    plot = write_plot(qa.frontier, args.plot, title=Path(args.model).name) if args.plot else None
    held = qa.frontier.heldout
    print(
        f"Held-out split: {held.get('questions')} questions of {', '.join(held.get('files', []))}; "
        f"machine: {qa.frontier.machine}\n"
    )
    print("\n".join(heldout_table(qa.frontier)))
    print(f"\nBy precision (default: {qa.frontier.default_dtype}; searched in {qa.frontier.dtype})\n")
    print("\n".join(dtype_table(qa.frontier, budgets)))
    if examples is not None:
        print(f"\nSQuAD dev: {len(examples)} questions\n")
        print("\n".join(dev_table(qa, examples, budgets)))
    if plot:
        print(f"\nplot: {plot}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
