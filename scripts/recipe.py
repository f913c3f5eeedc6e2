"""The whole Dynamic-TinyBERT recipe, end to end (docs/method.md, "The training recipe"):

    teacher fine-tuning -> intermediate-layer distillation -> prediction-layer distillation
    -> the learned token selector -> LengthDrop (its sub-models dropping what the selector drops)
    -> search (on the held-out split the stages selected on)

    python scripts/recipe.py --teacher .pretrained/all-mpnet-base-v2 --student .pretrained/all-MiniLM-L6-v2 \
        --data ../shared/data/train/*.json --out runs/recipe [--processes N] [--smoke]

Each stage is one `dynamic-tinybert train` run writing its own folder under --out; a stage that
has finished is skipped, one that was interrupted resumes, so the same command can simply be run
again; a stage ends with the recipe, whether Ctrl-C, SIGTERM or (on Linux) SIGKILL ends it. The
defaults are Intel's settings; --epochs, --minutes, --batch-size and --lr change them per stage
(e.g. --minutes intermediate=2.5: the stage fits its schedule into a fixed accelerator lease, see
training/accelerator.md); --until stops after a stage. --smoke runs every stage for a few steps on
a few questions, to check the chain before a real run. LengthDrop is kept only if it improves the
held-out frontier (the mean F1 of the frontier points that budgets 0.25..1 pick) over the
distilled student with its selector; the chosen model is written to --out/final.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.options import UsageError, check_count

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


class StageFailed(Exception):
    """A stage's command ended with a non-zero exit status; it has said why on stderr already."""

    def __init__(self, name: str, code: int):
        super().__init__(
            f"{name} failed (exit status {code}); its error is above. Fix it and run the same "
            "command again: the stages that finished are skipped"
        )
        self.code = code


def run(command: list[str], name: str) -> None:
    """Run one stage's command; StageFailed when it fails."""
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    process = subprocess.Popen(
        command, preexec_fn=_ends_with(os.getpid()) if sys.platform == "linux" else None
    )
    try:
        code = process.wait()
    except KeyboardInterrupt:
        stop(process)
        raise
    if code != 0:  # one killed by a signal (code -N) exits as a shell reports it, 128 + N
        raise StageFailed(name, code if code > 0 else 128 - code)


def _ends_with(recipe: int):
    """What a stage's process does before it starts (Linux): ask for SIGTERM when the recipe
    ends, so that a recipe killed by SIGKILL, which it cannot catch to stop its stage, leaves no
    stage running on alone."""

    def ask() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != recipe:  # it ended before the request
            os.kill(os.getpid(), signal.SIGTERM)

    return ask


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(KeyboardInterrupt):
    """SIGTERM: the recipe stops as on Ctrl-C, its running stage with it, and exits with 143."""


def _terminate(signum, frame) -> None:
    raise Terminated


def stop(process: subprocess.Popen) -> None:
    """After Ctrl-C or SIGTERM: the stage is asked to stop by SIGTERM (one at a terminal got
    Ctrl-C too; either way a training stage stops after the step it is in, its state saved), and
    given 30 s for it, as torchrun gives its processes; then it is killed (its states are written
    whole)."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--search-limit",
        type=int,
        default=1000,
        help="held-out questions the search uses, drawn over every held-out file (search --sample)",
    )
    return parser


def stage_command(args: argparse.Namespace, stage: str, start: Path, teacher: Path | None) -> list[str]:
    """The `train` command of one stage, starting from the folder `start`, distilling from
    `teacher` (the fine-tuned one; None before it is)."""
    _, epochs, lr, batch = next(s for s in STAGES if s[0] == stage)
    epochs, lr = dict(args.epochs).get(stage, epochs), dict(args.lr).get(stage, lr)
    batch = dict(args.batch_size).get(stage, batch)
    command = [sys.executable, "-m", "dynamic_tinybert", "train", "--stage", stage, "--model", str(start)]
    command += ["--data", *args.data, "--output", str(args.out / stage), "--lr", str(lr), "--quiet"]
    command += ["--processes", str(args.processes)]
    command += args.train_args.split()
    if stage in dict(args.minutes):
        command += ["--max-minutes", str(dict(args.minutes)[stage])]
    if stage not in ("finetune", "selector"):
        command += ["--teacher", str(teacher)]
    if args.smoke:
        command += ["--max-steps", "3", "--save-steps", "3", "--limit", "64", "--heldout-limit", "16"]
        return command + ["--batch-size", str(2 * args.processes)]
    return command + ["--epochs", str(epochs), "--batch-size", str(batch)]


def train_stages(args: argparse.Namespace) -> dict[str, Path]:
    """Run the stages in order, up to --until; the folder of each (and of the starting points)."""
    folders = {"teacher": Path(args.teacher), "student": Path(args.student)}
    starts = {
        "finetune": "teacher",
        "intermediate": "student",
        "prediction": "student" if args.skip_intermediate else "intermediate",
        "selector": "prediction",
        "lengthdrop": "selector",
    }
    skipped = {
        "finetune": args.skip_finetune,
        "intermediate": args.skip_intermediate,
        "lengthdrop": args.skip_lengthdrop,
    }
    if args.skip_finetune:
        folders["finetune"] = folders["teacher"]
    for stage, *_ in STAGES:
        if skipped.get(stage):
            continue
        command = stage_command(args, stage, folders[starts[stage]], folders.get("finetune"))
        run(command, f"stage {stage}")
        folders[stage] = args.out / stage
        if stage == args.until:
            break
    return folders


def search(args: argparse.Namespace, folder: Path) -> None:
    """The frontier of one candidate, on the held-out split its training selected on."""
    if args.smoke:
        settings = ["--sample", "24", "--iterations", "2", "--population", "4", "--mutations", "4"]
        settings += ["--crossovers", "4", "--latency-windows", "4"]
    else:
        settings = ["--sample", str(args.search_limit)]  # drawn over every held-out file
    command = [sys.executable, "-m", "dynamic_tinybert", "search", "--model", str(folder)]
    command += ["--data", str(folder / "heldout.json"), "--quiet", *settings]
    run(command, f"the search of {folder}")


def write_final(chosen: Path, final: Path) -> None:
    """--out/final: the chosen model without its training state, whole or not at all (a run
    killed while copying leaves the final model of before, or none)."""

    def fill(staging: Path) -> None:
        ignore = shutil.ignore_patterns("trainer", "search_state.json")
        shutil.copytree(chosen, staging, ignore=ignore, dirs_exist_ok=True)

    atomic_write(final, fill, folder=True)


def recipe(args: argparse.Namespace) -> None:
    """The stages, the search of each candidate, then the chosen one to --out/final."""
    check_count(args.processes, "--processes")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder for the stages' outputs")
    folders = train_stages(args)
    if args.skip_search or args.until:
        return
    candidates = [folders["selector"]] + ([folders["lengthdrop"]] if "lengthdrop" in folders else [])
    for folder in candidates:
        search(args, folder)
    scores = {folder: score(folder) for folder in candidates}
    chosen = max(candidates, key=lambda f: (scores[f], f == candidates[0]))
    write_final(chosen, args.out / "final")
    summary = {"chosen": str(chosen), "mean_heldout_f1_at_budgets": {str(k): v for k, v in scores.items()}}
    text = json.dumps(summary, indent=1) + "\n"
    atomic_write(args.out / "recipe.json", lambda path: path.write_text(text))
    print(text, end="")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        recipe(args)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except StageFailed as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt as stopping:
        how, code = ("terminated", 143) if isinstance(stopping, Terminated) else ("interrupted", 130)
        print(f"{parser.prog}: {how}; the same command goes on where it stopped", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
