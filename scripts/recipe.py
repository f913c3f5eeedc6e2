"""The whole Dynamic-TinyBERT recipe, end to end (docs/method.md, "The training recipe"):

    teacher fine-tuning -> intermediate-layer distillation -> prediction-layer distillation
    -> the learned token selector -> LengthDrop (its sub-models dropping what the selector drops)
    -> search (on the held-out split the stages selected on)

    python scripts/recipe.py --teacher .pretrained/all-mpnet-base-v2 --student .pretrained/all-MiniLM-L6-v2 \
        --data ../shared/data/train/*.json --out runs/recipe [--processes N] [--smoke]

Each stage is one `dynamic-tinybert train` run writing its own folder under --out; a stage that
has finished is skipped, one that was interrupted resumes, so the same command can simply be run
again. The defaults are Intel's settings; --epochs, --minutes, --batch-size and --lr change them per
stage (e.g. --minutes intermediate=2.5: the stage fits its schedule into a fixed accelerator lease,
see training/accelerator.md); --until stops after a stage. --smoke runs every stage for a few steps
on a few questions, to check the chain before a real run. LengthDrop is kept only if it improves the
held-out frontier (the mean F1 of the frontier points that budgets 0.25..1 pick) over the
distilled student with its selector; the chosen model is written to --out/final.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

# (stage, epochs, learning rate, batch size): docs/method.md, "The training recipe", after Intel
STAGES = [
    ("finetune", 2, 3e-5, 8),
    ("intermediate", 20, 5e-5, 16),
    ("prediction", 10, 3e-5, 16),
    ("selector", 3, 1e-3, 32),  # the encoder frozen: only the small scorers learn
    ("lengthdrop", 10, 2e-5, 16),
]
BUDGETS = (1.0, 0.75, 0.5, 0.33, 0.25)


def per_stage(kind):
    """STAGE=VALUE -> (stage, value), for the per-stage overrides."""

    def parse(text: str):
        stage, _, value = text.partition("=")
        if stage not in dict((s[0], s) for s in STAGES) or not value:
            raise argparse.ArgumentTypeError(
                f"expected STAGE=VALUE with STAGE one of {[s[0] for s in STAGES]}"
            )
        return stage, kind(value)

    return parse


def dynamic_tinybert(processes: int) -> list[str]:
    if processes > 1:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "dynamic_tinybert",
        ]
    return [sys.executable, "-m", "dynamic_tinybert"]


def run(command: list[str]) -> None:
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def score(folder: Path) -> float:
    """Mean held-out F1 of the frontier points the budgets pick."""
    from dynamic_tinybert.frontier import BudgetError, Frontier

    frontier = Frontier.load(folder)
    picked = []
    for budget in BUDGETS:
        try:
            picked.append(frontier.pick(budget=budget).heldout_f1)
        except BudgetError:
            picked.append(0.0)
    return sum(picked) / len(picked)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher", required=True, help="the teacher's starting folder (e.g. all-mpnet-base-v2)"
    )
    parser.add_argument(
        "--student", required=True, help="the student's starting folder (e.g. all-MiniLM-L6-v2)"
    )
    parser.add_argument("--data", nargs="+", required=True, help="training SQuAD-format files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=1, help="processes per stage (torchrun)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of every stage on a few questions")
    parser.add_argument("--skip-lengthdrop", action="store_true")
    parser.add_argument(
        "--skip-finetune",
        action="store_true",
        help="--teacher is fine-tuned already: distil from it as it is (several students, one teacher)",
    )
    parser.add_argument(
        "--skip-intermediate",
        action="store_true",
        help="prediction-layer distillation straight from --student (a student already trained for QA, "
        "when there is no time for intermediate-layer distillation's epochs)",
    )
    for name, kind, what in (
        ("--epochs", float, "epochs"),
        ("--minutes", float, "a time limit (train --max-minutes)"),
        ("--batch-size", int, "batch size"),
        ("--lr", float, "peak learning rate"),
    ):
        parser.add_argument(
            name,
            type=per_stage(kind),
            action="append",
            default=[],
            metavar="STAGE=VALUE",
            help=f"a stage's {what} instead of the default (repeat for several stages)",
        )
    parser.add_argument(
        "--train-args", default="", help="more `train` options for every stage, e.g. '--save-steps 100000'"
    )
    parser.add_argument("--until", choices=[s[0] for s in STAGES], help="stop after this stage")
    parser.add_argument("--skip-search", action="store_true", help="train the stages only")
    parser.add_argument("--search-limit", type=int, default=1000, help="held-out questions the search uses")
    args = parser.parse_args()

    base = dynamic_tinybert(args.processes)
    folders = {"teacher": Path(args.teacher), "student": Path(args.student)}
    starts = {
        "finetune": "teacher",
        "intermediate": "student",
        "prediction": "student" if args.skip_intermediate else "intermediate",
        "selector": "prediction",
        "lengthdrop": "selector",
    }
    epochs_of, minutes_of = dict(args.epochs), dict(args.minutes)
    batch_of, lr_of = dict(args.batch_size), dict(args.lr)
    skipped = {
        "finetune": args.skip_finetune,
        "intermediate": args.skip_intermediate,
        "lengthdrop": args.skip_lengthdrop,
    }
    if args.skip_finetune:
        folders["finetune"] = folders["teacher"]
    for stage, epochs, lr, batch in STAGES:
        if skipped.get(stage):
            continue
        epochs, lr, batch = epochs_of.get(stage, epochs), lr_of.get(stage, lr), batch_of.get(stage, batch)
        output = args.out / stage
        command = [
            *base,
            "train",
            "--stage",
            stage,
            "--model",
            str(folders[starts[stage]]),
            "--data",
            *args.data,
            "--output",
            str(output),
            "--lr",
            str(lr),
            "--quiet",
            *args.train_args.split(),
        ]
        if stage in minutes_of:
            command += ["--max-minutes", str(minutes_of[stage])]
        if stage not in ("finetune", "selector"):
            command += ["--teacher", str(folders["finetune"])]
        if args.smoke:
            command += [
                "--max-steps",
                "3",
                "--save-steps",
                "3",
                "--limit",
                "64",
                "--heldout-limit",
                "16",
                "--batch-size",
                str(2 * args.processes),
            ]
        else:
            command += ["--epochs", str(epochs), "--batch-size", str(batch)]
        run(command)
        folders[stage] = output
        if stage == args.until:
            break
    if args.skip_search or args.until:
        return 0

    search = (
        [
            "--limit",
            "24",
            "--iterations",
            "2",
            "--population",
            "4",
            "--mutations",
            "4",
            "--crossovers",
            "4",
            "--latency-windows",
            "4",
        ]
        if args.smoke
        else ["--limit", str(args.search_limit)]
    )
    candidates = [folders["selector"]] + ([folders["lengthdrop"]] if "lengthdrop" in folders else [])
    for folder in candidates:
        run(
            [
                sys.executable,
                "-m",
                "dynamic_tinybert",
                "search",
                "--model",
                str(folder),
                "--data",
                str(folder / "heldout.json"),
                "--quiet",
                *search,
            ]
        )
    scores = {folder: score(folder) for folder in candidates}
    chosen = max(candidates, key=lambda f: (scores[f], f == candidates[0]))
    final = args.out / "final"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(chosen, final, ignore=shutil.ignore_patterns("trainer", "search_state.json"))
    summary = {"chosen": str(chosen), "mean_heldout_f1_at_budgets": {str(k): v for k, v in scores.items()}}
    (args.out / "recipe.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
