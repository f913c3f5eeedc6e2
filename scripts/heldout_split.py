"""Write the held-out split that the training stages cut from these files (each stage writes it
as heldout.json in its folder): the questions that the held-out numbers in training/ are measured
on. The split depends on the seed and on each file's articles, not on the model; the order of the
files orders the questions (the search uses the first --limit of them).

    python scripts/heldout_split.py runs/heldout.json ../shared/data/train/squadshifts_new_wiki.json ...
    python scripts/heldout_split.py runs/heldout-after-600.json --skip 600 ../shared/data/train/...
"""

from __future__ import annotations

import argparse

from dynamic_tinybert.data import write_squad
from dynamic_tinybert.train_data import split_files
from dynamic_tinybert.train_settings import TrainSettings


def main(argv: list[str] | None = None) -> None:
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
    settings = TrainSettings(stage="finetune", model="-", data=args.data, output="-", seed=args.seed)
    write_squad(split_files(settings)[1][args.skip :], args.out)


if __name__ == "__main__":
    main()
