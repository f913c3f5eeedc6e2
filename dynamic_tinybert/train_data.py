"""The data of a training run: the training files cut into labelled windows, and the held-out
split that selects checkpoints."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Example, answer_matches, label_window, read_squad, refuse_squad_dev, split_heldout
from .tokenizer import QATokenizer, Window
from .train_settings import TrainingError, TrainSettings


def load_examples(source: str) -> list[Example]:
    """A SQuAD-format JSON file, or a dataset name for the `datasets` library ("squad",
    "rajpurkar/squad:train"); never one that holds SQuAD dev questions."""
    path = Path(source)
    examples = read_squad(path) if path.exists() or source.endswith(".json") else _dataset(source)
    refuse_squad_dev(examples, source)
    return examples


def _dataset(source: str) -> list[Example]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise TrainingError(
            f"{source} is not a file; to load a dataset by name, pip install datasets"
        ) from None
    name, _, split = source.partition(":")
    rows = load_dataset(name, split=split or "train")
    return [
        Example(
            str(r["id"]),
            r["question"],
            r["context"],
            tuple(r["answers"]["text"]),
            tuple(r["answers"]["answer_start"]),
            r.get("title", ""),
            paragraph=zlib.crc32(r["context"].encode("utf-8")),  # stable across runs, unlike hash()
        )
        for r in rows
    ]


@dataclass
class TrainingData:
    windows: list[Window]
    starts: np.ndarray  # gold token positions per window; 0 ([CLS]) when the answer is elsewhere
    ends: np.ndarray
    heldout: list[Example]  # the whole held-out split
    skipped: list[str]  # ids of questions whose answer does not match the context


def split_files(settings: TrainSettings) -> tuple[list[Example], list[Example]]:
    """The training questions and the held-out ones: --heldout's files, or else a share of each
    training file's articles (split_heldout, by --seed), in the order of the files."""
    training, heldout = [], []
    for source in settings.data:
        examples = load_examples(source)
        if settings.heldout:
            training += examples
        else:
            kept, held = split_heldout(examples, settings.heldout_fraction, settings.seed)
            training += kept
            heldout += held
    for source in settings.heldout or []:
        heldout += load_examples(source)
    return training, heldout


def prepare_data(settings: TrainSettings, tokenizer: QATokenizer) -> TrainingData:
    training, heldout = split_files(settings)
    skipped = [e.id for e in training if not answer_matches(e)]
    training = [e for e in training if answer_matches(e)]
    if settings.limit:
        training = training[: settings.limit]
    if not training:
        raise TrainingError("no training questions left")
    if not heldout:
        raise TrainingError("no held-out questions to select checkpoints on; give --heldout FILE")
    encoded = tokenizer.encode_windows([e.question for e in training], [e.context for e in training])
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
    sample = np.random.default_rng(settings.seed).permutation(len(heldout))[: settings.heldout_limit]
    return [heldout[i] for i in sorted(sample)]
