"""The data of a training run: the training files cut into labelled windows, and the held-out
split that selects checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import (
    Example,
    SquadFormatError,
    answer_matches,
    check_answerable,
    label_window,
    read_examples,
    refuse_squad_dev,
    split_heldout,
    spread_sample,
)
from .lengths import geometric_with_mean
from .tokenizer import QATokenizer, Window
from .train_settings import TrainingError, TrainSettings

if TYPE_CHECKING:
    from .reader import QuestionAnswerer


def load_examples(source: str) -> list[Example]:
    """A SQuAD-format JSON file, or a dataset name for the `datasets` library ("squad",
    "rajpurkar/squad:train"); never one that holds SQuAD dev questions."""
    if Path(source).is_dir():
        raise SquadFormatError(f"{source} is a folder; give its SQuAD JSON files, one after another")
    examples = read_examples(source)
    refuse_squad_dev(examples, source)
    return examples


@dataclass
class TrainingData:
    windows: list[Window]
    starts: np.ndarray  # gold token positions per window; 0 ([CLS]) when the answer is elsewhere
    ends: np.ndarray
    heldout: list[Example]  # the whole held-out split
    skipped: list[str]  # ids of questions whose answer does not match the context


def split_files(settings: TrainSettings) -> tuple[list[Example], list[Example]]:
    """The training questions and the held-out ones: --heldout's files, or else a share of each
    training file's articles (split_heldout, by --seed), in the order of the files. Held-out
    questions without gold answers, which no checkpoint could be scored on, are refused here,
    before any training."""
    data = [(source, load_examples(source)) for source in settings.data]
    held_files = [(source, load_examples(source)) for source in settings.heldout or []]
    unique_ids(data, "--data")
    unique_ids(held_files, "--heldout")
    training, heldout = [], []
    for source, examples in data:
        if settings.heldout:
            training += examples
            continue
        kept, held = split_heldout(examples, settings.heldout_fraction, settings.seed)
        check_answerable(held, f"{source} (its held-out part)")
        training += kept
        heldout += held
    for source, examples in held_files:
        check_answerable(examples, source)
        heldout += examples
    return training, heldout


def unique_ids(files: list[tuple[str, list[Example]]], option: str) -> None:
    """A question id in two of the files (or in one file named twice) would be trained on, or
    scored, twice, and the held-out file a run writes would repeat it: refused, naming both.

    >>> a = ("a.json", [Example("q1", "?", "c")])
    >>> unique_ids([a, ("b.json", [Example("q2", "?", "c")])], "--data")
    >>> unique_ids([a, a], "--data")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    dynamic_tinybert.train_settings.TrainingError: --data names a.json twice (question 'q1' ...
    """
    seen: dict[str, int] = {}
    for index, (source, examples) in enumerate(files):
        for example in examples:
            first = seen.setdefault(example.id, index)
            if first == index:
                continue
            if files[first][0] == source:
                raise TrainingError(
                    f"{option} names {source} twice (question {example.id!r} is in both); give each file once"
                )
            raise TrainingError(
                f"{option}: question {example.id!r} is in both {files[first][0]} and {source}; "
                "question ids must be unique across the files: leave one of them out"
            )


def prepare_data(settings: TrainSettings, tokenizer: QATokenizer) -> TrainingData:
    training, heldout = split_files(settings)
    skipped = [e.id for e in training if not answer_matches(e)]
    training = [e for e in training if answer_matches(e)]
    if settings.limit:
        training = training[: settings.limit]
    if not training:
        raise TrainingError(
            f"no training questions left: of {len(training) + len(skipped) + len(heldout)} questions, "
            f"{len(heldout)} are held out and {len(skipped)} have no gold answer, or one not found in the "
            "context at its answer_start; give more data, or the held-out questions in a file of their "
            "own (--heldout FILE)"
        )
    if not heldout:
        raise TrainingError("no held-out questions to select checkpoints on; give --heldout FILE")
    encoded = tokenizer.encode_examples(training)
    windows, starts, ends = [], [], []
    for example, example_windows in zip(training, encoded, strict=True):
        first = example.answer_starts[0]
        for window in example_windows:
            start, end = label_window(
                window.offsets, window.context_mask, first, first + len(example.answers[0])
            )
            windows.append(window)
            starts.append(start)
            ends.append(end)
    return TrainingData(windows, np.array(starts), np.array(ends), heldout, skipped)


def heldout_sample(heldout: list[Example], settings: TrainSettings) -> list[Example]:
    """The held-out questions evaluated at each save: a sample of every file, not the first file's."""
    return spread_sample(heldout, settings.heldout_limit, settings.seed)


def heldout_scores(
    qa: QuestionAnswerer, heldout: list[Example], settings: TrainSettings
) -> tuple[float, dict]:
    """The score checkpoints are compared on, and the record for the log.

    The full model's F1; for LengthDrop, whose purpose is the sub-models, the mean F1 of the
    full model and the smallest configuration; for the selector, which leaves the full model as
    it is, the F1 where every layer drops tokens, keeping --selector-share of them on average."""
    if settings.stage == "selector":
        lengths = geometric_with_mean(settings.selector_share, qa.num_layers)
        result = qa.evaluate(heldout, lengths=lengths, batch_size=64, selector="learned")
        return result.f1, {
            "heldout_exact_match_selector": result.exact_match,
            "heldout_f1_selector": result.f1,
            "selector_lengths": list(lengths or ()),
        }
    result = qa.evaluate(heldout, batch_size=64)
    record = {"heldout_exact_match": result.exact_match, "heldout_f1": result.f1}
    if settings.stage != "lengthdrop":
        return result.f1, record
    small = qa.evaluate(heldout, lengths=settings.smallest_lengths(qa.num_layers), batch_size=64)
    score = (result.f1 + small.f1) / 2
    return score, record | {"heldout_f1_smallest": small.f1, "selection_f1": score}
