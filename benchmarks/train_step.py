"""Seconds a training stage's steps take with the model's dropout, with the attention
probabilities' dropout off (--attention-dropout 0: torch's fused attention kernel can run) and
with all dropout off (--dropout 0), on the same batches in one process, in turn (not a test).

    python benchmarks/train_step.py --train-file ../shared/data/train/squadshifts_amazon.json --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from dynamic_tinybert.data import training_batches
from dynamic_tinybert.processes import start_processes, use_bf16
from dynamic_tinybert.stages import StepContext
from dynamic_tinybert.timing import machine
from dynamic_tinybert.train import Run, _build, _optimizer_step
from dynamic_tinybert.train_settings import TrainSettings

# name: the settings it changes
DROPOUTS = {
    "the model's dropout": {},
    "--attention-dropout 0": {"attention_dropout": 0.0},
    "--dropout 0": {"dropout": 0.0},
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dynamic_tinybert/default_model")
    parser.add_argument("--train-file", required=True, help="a SQuAD-format training file")
    parser.add_argument("--stage", default="lengthdrop", choices=("finetune", "lengthdrop"))
    parser.add_argument("--steps", type=int, default=10, help="steps timed, after one untimed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-questions", type=int, default=2000, help="the file's first N questions")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    # LengthDrop as training/README.md runs it: one random sub-model a step, no LayerDrop
    settings = TrainSettings(
        stage=args.stage,
        model=args.model,
        data=[args.train_file],
        heldout=[args.train_file],  # unused: no split needed
        output="-",
        batch_size=args.batch_size,
        layerdrop=0.0,
        random_configs=1,
        limit=args.train_questions,
    )
    # each setting's run as `train` builds it (model, dropout, data, optimizer), on one process
    procs = start_processes("cpu")
    runs = {
        name: _build(dataclasses.replace(settings, **changes), procs, Path(settings.output))
        for name, changes in DROPOUTS.items()
    }
    data = next(iter(runs.values())).data
    batches = training_batches([len(w) for w in data.windows], args.batch_size, 0, 0)[: args.steps + 1]
    if len(batches) < args.steps + 1:
        raise SystemExit(f"--train-questions make {len(batches)} batches; --steps {args.steps} needs more")
    seconds: dict[str, list[float]] = {name: [] for name in DROPOUTS}
    for repeat in range(args.repeats):
        names = list(DROPOUTS) if repeat % 2 == 0 else list(reversed(DROPOUTS))
        for name in names:
            seconds[name].append(_steps(runs[name], batches))
            print(name, round(seconds[name][-1], 2), file=sys.stderr, flush=True)
    steps = f"{args.steps} steps of {args.batch_size} windows"
    print(f"{machine()}; --stage {args.stage}, {steps}, medians of {args.repeats}")
    print("| dropout | seconds | speedup |")
    print("|---|---|---|")
    base = statistics.median(seconds["the model's dropout"])
    for name, times in seconds.items():
        print(f"| {name} | {statistics.median(times):.1f} | {base / statistics.median(times):.2f}x |")
    return 0


def _steps(run: Run, batches: list[list[int]]) -> float:
    """Seconds of the training loop's own steps on `batches`, after the first (which builds the
    optimizer's state)."""
    bf16 = use_bf16(run.settings.precision, run.procs.device)
    began = 0.0
    for step, ids in enumerate(batches):
        if step == 1:
            began = time.perf_counter()
        ctx = StepContext(run.settings, None, None, np.random.default_rng([0, step]))
        _optimizer_step(run, ids, ctx, bf16, run.settings.lr)
    return time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
