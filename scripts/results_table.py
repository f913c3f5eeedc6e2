"""The results table of the README: SQuAD 1.1 dev accuracy and CPU speed of the teacher, the
student at full length and the student at the frontier points that budgets of 3/4, 1/2, 1/3
and 1/4 of its FLOPs pick, as `--budget` picks them (shares or margin points; not a test); with
--margins, the student under each of those margins too (docs/selector.md, "Margins"; their
GFLOPs are measured).

    python scripts/results_table.py [--student M] [--teacher T | --teacher-speed T] \
        --dev ../shared/data/squad/dev-v1.1.json [--dev-limit N] [--margins 1 2 3] [--repeats 3]

Accuracy is on all of dev (or its first --dev-limit questions). Speed is measured once every
accuracy is, on the windows of the first --speed-questions dev questions: latency is the median
over --latency-windows windows run one at a time; throughput runs all those windows in batches
of 32 sorted by length. Each of --repeats repetitions times every row once, one after the other;
the table gives each row's median over the repetitions, and its speedups are the medians of the
ratios taken inside each repetition. The teacher runs in transformers with dynamic padding on the
same windows; --teacher-speed times a teacher whose accuracy is not reported (an architecture that
was not trained, say).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field

import numpy as np

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.cli import exit_status
from dynamic_tinybert.frontier import BudgetError
from dynamic_tinybert.lengths import format_lengths, format_margins, mean_gflops, parse_margins
from dynamic_tinybert.options import check_count
from dynamic_tinybert.precision import DTYPES
from dynamic_tinybert.timing import latency_ms, machine, throughput

BUDGETS = (0.75, 0.5, 1 / 3, 0.25)


@dataclass
class Row:
    """One row of the table: what runs, its accuracy, and its timings, one per repetition."""

    name: str
    configuration: str  # the lengths or margins column
    qa: QuestionAnswerer
    windows: list  # the timed windows, in this row's tokenizer
    sample: list  # those timed one at a time
    run: dict = field(default_factory=dict)  # lengths=... or margins=...
    exact_match: str = ""
    f1: str = ""
    gflops: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms, one per repetition
    rates: list[float] = field(default_factory=list)  # windows/s at batch 32, one per repetition

    def evaluate(self, examples) -> None:
        result = self.qa.evaluate(examples, progress=True, **self.run)
        self.exact_match, self.f1 = f"{result.exact_match:.2f}", f"{result.f1:.2f}"
        self.gflops = result.gflops_per_window

    def time_once(self) -> None:
        lengths = self.run.get("lengths")
        options = {"margins": self.run["margins"]} if "margins" in self.run else {}
        model, device = self.qa.model, self.qa.device
        self.latencies.append(latency_ms(model, self.sample, lengths, device, **options))
        self.rates.append(throughput(model, self.windows, lengths, device, **options))

    def cells(self, teacher: Row | None, full: Row) -> str:
        return (
            f"| {self.name} | {self.configuration} | {self.exact_match} | {self.f1} | {self.gflops:.2f} "
            f"| {statistics.median(self.latencies):.1f} | {statistics.median(self.rates):.1f} "
            f"| {speedup(self, teacher)} | {speedup(self, full)} |"
        )


def speedup(row: Row, over: Row | None) -> str:
    """The median over the repetitions of row's throughput over `over`'s in the same repetition."""
    if over is None:
        return ""
    return f"{statistics.median(a / b for a, b in zip(row.rates, over.rates, strict=True)):.2f}x"


def flat_windows(qa: QuestionAnswerer, examples) -> list:
    """Every window of these examples in qa's tokenizer, one list."""
    questions, contexts = [e.question for e in examples], [e.context for e in examples]
    return [w for ws in qa.tokenizer.encode_windows(questions, contexts) for w in ws]


def timed_windows(qa: QuestionAnswerer, examples, count: int, rng) -> tuple[list, list]:
    """The windows of these examples in qa's tokenizer, and `count` of them drawn for latency."""
    windows = flat_windows(qa, examples)
    drawn = sorted(rng.choice(len(windows), min(len(windows), count), False))
    return windows, [windows[i] for i in drawn]


def student_rows(student: QuestionAnswerer, margins: list[str], windows, sample) -> list[Row]:
    """Full length, the frontier points of BUDGETS, then each of the margins."""
    layers = student.num_layers
    # choose() refuses margins this model cannot run (no learned selector) now, before any evaluation
    asked = [student.choose(margins=parse_margins(text, layers)).margins for text in margins]
    runs = [("student, full length", {})]
    if student.frontier is not None:
        for budget in BUDGETS:
            try:
                lengths, chosen, _ = student.choose(budget=budget)
            except BudgetError as error:
                print(f"budget {budget:.2f}: {error}", file=sys.stderr)
                continue
            run = {"margins": chosen} if chosen is not None else {"lengths": lengths}
            runs.append((f"student, frontier point within {budget:.2f} of its FLOPs", run))
    runs += [(f"student, margin {text}", {"margins": m}) for text, m in zip(margins, asked, strict=True)]
    return [
        Row(
            name,
            f"margins {format_margins(run['margins'], layers)}"
            if "margins" in run
            else format_lengths(run.get("lengths"), layers),
            student,
            windows,
            sample,
            run,
        )
        for name, run in runs
    ]


def teacher_row(folder: str, trained: bool, timed, evaluated, count: int, rng) -> Row:
    """The teacher's row, its windows drawn; a trained one's accuracy is left to Row.evaluate."""
    teacher = QuestionAnswerer.from_pretrained(folder)
    # the teacher's own tokenizer makes the same windows when it shares the student's wordpieces
    windows, sample = timed_windows(teacher, timed, count, rng)
    row = Row("teacher (transformers, dynamic padding)", "", teacher, windows, sample)
    if not trained:
        row.gflops = mean_gflops(teacher.model.config, [len(w) for w in flat_windows(teacher, evaluated)])
        row.exact_match = "not trained here"
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student", help="model folder (default: the shipped default model)")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", help="a trained teacher: accuracy and speed")
    teacher.add_argument("--teacher-speed", help="a teacher architecture timed for the speedup only")
    parser.add_argument("--dev", required=True)
    parser.add_argument("--dtype", choices=DTYPES, help="precision (default: the model's)")
    parser.add_argument("--dev-limit", type=int, help="only the first N dev questions")
    parser.add_argument("--speed-questions", type=int, default=300)
    parser.add_argument("--latency-windows", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="timings of every row, medians reported")
    parser.add_argument("--margins", nargs="*", default=[], help="rows under these margins, e.g. 1 2 3")
    return parser


def check_counts(args: argparse.Namespace) -> None:
    """The counts must be at least 1: 0 would leave nothing to time, and a negative slice of dev
    would silently drop its last questions instead."""
    for option in ("dev_limit", "speed_questions", "latency_windows", "repeats"):
        leave = " (leave it out for all of dev)" if option == "dev_limit" else ""
        check_count(getattr(args, option), "--" + option.replace("_", "-"), note=leave)


def table(args: argparse.Namespace) -> None:
    """Every row evaluated, then timed --repeats times; the table on stdout."""
    check_counts(args)
    dev = read_squad(args.dev)
    evaluated = dev[: args.dev_limit]
    timed = dev[: args.speed_questions]
    rng = np.random.default_rng(0)
    student = QuestionAnswerer.from_pretrained(args.student, dtype=args.dtype)
    windows, sample = timed_windows(student, timed, args.latency_windows, rng)
    folder = args.teacher or args.teacher_speed
    teacher = None
    if folder:
        teacher = teacher_row(folder, bool(args.teacher), timed, evaluated, args.latency_windows, rng)
    students = student_rows(student, args.margins, windows, sample)  # checks --margins
    for row in [teacher, *students] if args.teacher else students:
        row.evaluate(evaluated)
    rows = [teacher, *students] if teacher else students
    for _ in range(args.repeats):
        for row in rows:
            row.time_once()

    print(
        f"\nSQuAD 1.1 dev: {len(evaluated)} questions. Speed: {len(windows)} windows of the first "
        f"{len(timed)} dev questions, medians of {args.repeats} repetitions; the student in "
        f"{student.dtype}; {machine()}\n"
    )
    print(
        "| model | lengths | dev EM | dev F1 | GFLOPs/window | latency, batch 1 (ms) | windows/s, batch 32 "
        "| speedup over the teacher | speedup over full length |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.cells(teacher, students[0]))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: table(args))


if __name__ == "__main__":
    sys.exit(main())
