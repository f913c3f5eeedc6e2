"""Write the held-out split that the training stages cut from these files (each stage writes it
as heldout.json in its folder): the questions that the held-out numbers in training/ are measured
on. The split depends on the seed and on each file's articles, not on the model; the order of the
files orders the questions (the search uses the first --limit of them).

    python scripts/heldout_split.py runs/heldout.json ../shared/data/train/squadshifts_new_wiki.json ...
    python scripts/heldout_split.py runs/heldout-after-600.json --skip 600 ../shared/data/train/...
"""

from __future__ import annotations

import argparse
import sys

from dynamic_tinybert.cli import exit_status
from dynamic_tinybert.data import write_squad
from dynamic_tinybert.train_data import split_files
from dynamic_tinybert.train_settings import TrainSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", help="the SQuAD-format file to write")
    parser.add_argument("data", nargs="+", help="the training files, in the stages' order")
    parser.add_argument("--seed", type=int, default=42, help="the stages' --seed")
    parser.add_argument(
        "--skip", type=int, default=0, help="leave out the first N questions (e.g. those a search used)"
    )
    args = parser.parse_args(argv)
    if args.skip < 0:
        parser.error(
            f"--skip must be 0 or more (got {args.skip}): it leaves out that many questions from the start"
        )
    settings = TrainSettings(stage="finetune", model="-", data=args.data, output="-", seed=args.seed)
    return exit_status(parser.prog, lambda: write_squad(split_files(settings)[1][args.skip :], args.out))


if __name__ == "__main__":
    sys.exit(main())
