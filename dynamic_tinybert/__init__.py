"""Dynamic-TinyBERT: extractive question answering that drops tokens layer by layer.

The public API; each name lives in the module named for it, imported when first used, so that
importing one light module (the command's entry point, the server's settings) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .answers import Answer
    from .checkpoint import CheckpointError, load, save
    from .config import ModelConfig, WindowSettings
    from .data import Example, SquadFormatError, read_squad
    from .lengths import (
        LengthsError,
        constant_ratio,
        encoder_gflops,
        encoder_macs,
        parse_lengths,
        validate_lengths,
    )
    from .metrics import SquadScores, squad_scores
    from .model import DynamicBertForQuestionAnswering, QAOutput
    from .reader import Evaluation, Prediction, QuestionAnswerer
    from .tokenizer import QuestionCut

_MODULES = {
    "answers": ["Answer"],
    "checkpoint": ["CheckpointError", "load", "save"],
    "config": ["ModelConfig", "WindowSettings"],
    "data": ["Example", "SquadFormatError", "read_squad"],
    "lengths": [
        "LengthsError",
        "constant_ratio",
        "encoder_gflops",
        "encoder_macs",
        "parse_lengths",
        "validate_lengths",
    ],
    "metrics": ["SquadScores", "squad_scores"],
    "model": ["DynamicBertForQuestionAnswering", "QAOutput"],
    "reader": ["Evaluation", "Prediction", "QuestionAnswerer"],
    "tokenizer": ["QuestionCut"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [
    "Answer",
    "CheckpointError",
    "DynamicBertForQuestionAnswering",
    "Evaluation",
    "Example",
    "LengthsError",
    "ModelConfig",
    "Prediction",
    "QAOutput",
    "QuestionAnswerer",
    "QuestionCut",
    "SquadFormatError",
    "SquadScores",
    "WindowSettings",
    "constant_ratio",
    "encoder_gflops",
    "encoder_macs",
    "load",
    "parse_lengths",
    "read_squad",
    "save",
    "squad_scores",
    "validate_lengths",
]


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value  # found here from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
