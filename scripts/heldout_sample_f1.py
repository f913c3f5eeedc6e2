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

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.train import heldout_scores
from dynamic_tinybert.train_data import heldout_sample
from dynamic_tinybert.train_settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", help="model folders")
    parser.add_argument("--heldout", default="runs/selector6/heldout.json", help="a run's heldout.json")
    parser.add_argument("--seed", type=int, default=42, help="the run's --seed")
    parser.add_argument("--heldout-limit", type=int, default=1000, help="the run's --heldout-limit")
    parser.add_argument("--length-ratio", type=float, default=0.8, help="the run's --length-ratio")
    parser.add_argument("--stage", choices=("lengthdrop", "selector"), default="lengthdrop")
    parser.add_argument("--selector-share", type=float, default=0.5, help="the run's --selector-share")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args(argv)
    settings = TrainSettings(
        stage=args.stage,
        model="-",
        data=[],
        output="-",
        seed=args.seed,
        heldout_limit=args.heldout_limit,
        length_ratio=args.length_ratio,
        selector_share=args.selector_share,
    )
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


if __name__ == "__main__":
    main()
