"""The results table of the README: SQuAD 1.1 dev accuracy and CPU speed of the teacher, the
student at full length and the student at the frontier points that budgets of 3/4, 1/2, 1/3
and 1/4 of its FLOPs pick, as `--budget` picks them (shares or margin points; not a test); with
--margins, the student under each of those margins too (docs/selector.md, "Margins"; their
GFLOPs are measured).

    python scripts/results_table.py [--student M] [--teacher T | --teacher-speed T] \
        --dev ../shared/data/squad/dev-v1.1.json [--dev-limit N] [--margins 1 2 3]

Accuracy is on all of dev (or its first --dev-limit questions). Speed is measured on the windows
of the first --speed-questions dev questions: latency is the median over --latency-windows
windows run one at a time; throughput runs all those windows in batches of 32 sorted by length.
The teacher runs in transformers with dynamic padding on the same windows; --teacher-speed times
a teacher whose accuracy is not reported (an architecture that was not trained, say).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.frontier import BudgetError
from dynamic_tinybert.lengths import encoder_gflops, format_lengths, format_margins, parse_margins
from dynamic_tinybert.precision import DTYPES
from dynamic_tinybert.timing import latency_ms, machine, throughput

BUDGETS = (0.75, 0.5, 1 / 3, 0.25)


def speed(qa: QuestionAnswerer, windows, sample, lengths, **options) -> tuple[float, float]:
    return (
        latency_ms(qa.model, sample, lengths, qa.device, **options),
        throughput(qa.model, windows, lengths, qa.device, **options),
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student", help="model folder (default: the shipped default model)")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--teacher", help="a trained teacher: accuracy and speed")
    teacher.add_argument("--teacher-speed", help="a teacher architecture timed for the speedup only")
    parser.add_argument("--dev", required=True)
    parser.add_argument("--dtype", choices=DTYPES, help="precision (default: the model's)")
    parser.add_argument("--dev-limit", type=int)
    parser.add_argument("--speed-questions", type=int, default=300)
    parser.add_argument("--latency-windows", type=int, default=40)
    parser.add_argument("--margins", nargs="*", default=[], help="rows under these margins, e.g. 1 2 3")
    args = parser.parse_args()

    dev = read_squad(args.dev)
    evaluated = dev[: args.dev_limit] if args.dev_limit else dev
    student = QuestionAnswerer.from_pretrained(args.student, dtype=args.dtype)
    timed = dev[: args.speed_questions]
    windows = [
        w
        for ws in student.tokenizer.encode_windows([e.question for e in timed], [e.context for e in timed])
        for w in ws
    ]
    rng = np.random.default_rng(0)
    sample = [
        windows[i] for i in sorted(rng.choice(len(windows), min(len(windows), args.latency_windows), False))
    ]

    rows = []
    teacher_folder = args.teacher or args.teacher_speed
    if teacher_folder:
        teacher = QuestionAnswerer.from_pretrained(teacher_folder)
        # the teacher's own tokenizer makes the same windows when it shares the student's wordpieces
        t_windows = [
            w
            for ws in teacher.tokenizer.encode_windows(
                [e.question for e in timed], [e.context for e in timed]
            )
            for w in ws
        ]
        t_sample = [t_windows[i] for i in sorted(rng.choice(len(t_windows), len(sample), False))]
        t_latency, t_throughput = speed(teacher, t_windows, t_sample, None)
        if args.teacher:
            result = teacher.evaluate(evaluated, progress=True)
            gflops, em, f1 = result.gflops_per_window, f"{result.exact_match:.2f}", f"{result.f1:.2f}"
        else:
            encoded = teacher.tokenizer.encode_windows(
                [e.question for e in evaluated], [e.context for e in evaluated]
            )
            gflops = float(
                np.mean([encoder_gflops(teacher.model.config, len(w)) for ws in encoded for w in ws])
            )
            em, f1 = "not trained here", ""
        rows.append(("teacher (transformers, dynamic padding)", "", em, f1, gflops, t_latency, t_throughput))
    else:
        t_throughput = None

    configs = [("student, full length", None, {})]
    if student.frontier is not None:
        for budget in BUDGETS:
            try:
                lengths, margins, _ = student.choose(budget=budget)
            except BudgetError as error:
                print(f"budget {budget:.2f}: {error}", file=sys.stderr)
                continue
            options = {"margins": margins} if margins is not None else {}
            configs.append((f"student, frontier point within {budget:.2f} of its FLOPs", lengths, options))
    for text in args.margins:
        margins = {"margins": parse_margins(text, student.num_layers)}
        configs.append((f"student, margin {text}", None, margins))
    for name, lengths, options in configs:
        result = student.evaluate(evaluated, lengths=lengths, progress=True, **options)
        latency, rate = speed(student, windows, sample, lengths, **options)
        rows.append(
            (
                name,
                format_lengths(lengths, student.num_layers)
                if not options
                else f"margins {format_margins(options['margins'], student.num_layers)}",
                f"{result.exact_match:.2f}",
                f"{result.f1:.2f}",
                result.gflops_per_window,
                latency,
                rate,
            )
        )

    print(
        f"\nSQuAD 1.1 dev: {len(evaluated)} questions. Speed: {len(windows)} windows of the first "
        f"{len(timed)} dev questions; the student in {student.dtype}; {machine()}\n"
    )
    print(
        "| model | lengths | dev EM | dev F1 | GFLOPs/window | latency, batch 1 (ms) | windows/s, batch 32 "
        "| speedup over the teacher |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, lengths, em, f1, gflops, latency, rate in rows:
        gain = f"{rate / t_throughput:.2f}x" if t_throughput else ""
        print(f"| {name} | {lengths} | {em} | {f1} | {gflops:.2f} | {latency:.1f} | {rate:.1f} | {gain} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
