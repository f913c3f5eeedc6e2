"""Held-out F1 of model folders on the questions a training run selects its checkpoints on (its
held-out split's sample of --heldout-limit questions, train_data.heldout_sample): the numbers a
run's metrics.jsonl logs, for a model that was not trained there (the start of a run, the shipped
model). For LengthDrop (the default), F1 at full length and at its smallest configuration; with
--stage selector, F1 where every layer drops tokens, keeping --selector-share of them on average.

    python scripts/heldout_sample_f1.py dynamic_tinybert/default_model [--heldout runs/selector6/heldout.json]
    python scripts/heldout_sample_f1.py dynamic_tinybert/default_model --stage selector \
        --heldout runs/first-scorer/heldout.json
"""

from __future__ import annotations

import argparse
import sys

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.cli import exit_status
from dynamic_tinybert.precision import DTYPES
from dynamic_tinybert.train import heldout_scores
from dynamic_tinybert.train_data import heldout_sample
from dynamic_tinybert.train_settings import TrainSettings

# the run's options each stage's score depends on; given to the other stage, one would be ignored
STAGE_OPTIONS = {"lengthdrop": "length_ratio", "selector": "selector_share"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="model folders")
    parser.add_argument("--heldout", default="runs/selector6/heldout.json", help="a run's heldout.json")
    parser.add_argument("--seed", type=int, default=42, help="the run's --seed")
    parser.add_argument("--heldout-limit", type=int, default=1000, help="the run's --heldout-limit")
    parser.add_argument("--stage", choices=("lengthdrop", "selector"), default="lengthdrop")
    # default: the training's, in TrainSettings
    parser.add_argument(
        "--length-ratio", type=float, help="with --stage lengthdrop: the run's --length-ratio"
    )
    parser.add_argument(
        "--selector-share", type=float, help="with --stage selector: the run's --selector-share"
    )
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    return parser


def run_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainSettings:
    """The run's settings that choose and score the held-out sample, checked as training checks them."""
    for stage, name in STAGE_OPTIONS.items():
        if getattr(args, name) is not None and args.stage != stage:
            parser.error(f"--{name.replace('_', '-')} is a setting of --stage {stage}; leave it out")
    given = {name: getattr(args, name) for name in STAGE_OPTIONS.values() if getattr(args, name) is not None}
    settings = TrainSettings(
        stage=args.stage,
        model="",
        data=[],
        output="-",
        seed=args.seed,
        heldout_limit=args.heldout_limit,
        **given,
    )
    settings.check()
    return settings


def table(args: argparse.Namespace, settings: TrainSettings) -> None:
    questions = heldout_sample(read_squad(args.heldout), settings)
    columns = {"lengthdrop": ["heldout_f1", "heldout_f1_smallest"], "selector": ["heldout_f1_selector"]}
    names = {"lengthdrop": "full length | smallest configuration", "selector": "every layer dropping"}
    print(f"| model | {names[args.stage]} |")
    print("|---" * (1 + len(columns[args.stage])) + "|")
    for folder in args.models:
        qa = QuestionAnswerer.from_pretrained(folder, dtype=args.dtype)
        _, record = heldout_scores(qa, questions, settings)  # as a run of the stage scores its saves
        cells = " | ".join(f"{record[k]:.2f}" for k in columns[args.stage])
        print(f"| {folder} | {cells} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: table(args, run_settings(parser, args)))


if __name__ == "__main__":
    sys.exit(main())
