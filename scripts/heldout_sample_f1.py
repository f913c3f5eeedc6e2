"""Held-out F1 of model folders on the questions a training run selects its checkpoints on (its
held-out split's sample of --heldout-limit questions, train_data.heldout_sample), at full length and
at LengthDrop's smallest configuration: the numbers a run's metrics.jsonl logs, for a model that
was not trained there (the start of a run, the shipped model).

    python scripts/heldout_sample_f1.py dynamic_tinybert/default_model [--heldout runs/selector6/heldout.json]
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
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args(argv)
    settings = TrainSettings(
        stage="lengthdrop",
        model="-",
        data=[],
        output="-",
        seed=args.seed,
        heldout_limit=args.heldout_limit,
        length_ratio=args.length_ratio,
    )
    questions = heldout_sample(read_squad(args.heldout), settings)
    print("| model | full length | smallest configuration |")
    print("|---|---|---|")
    for folder in args.models:
        qa = QuestionAnswerer.from_pretrained(folder, dtype=args.dtype)
        _, record = heldout_scores(qa, questions, settings)  # as a LengthDrop run scores its saves
        print(f"| {folder} | {record['heldout_f1']:.2f} | {record['heldout_f1_smallest']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
