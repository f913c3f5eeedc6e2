"""Dynamic-TinyBERT: extractive question answering that drops tokens layer by layer.

The public API; each name lives in the module named for it.
"""

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
from .reader import Evaluation, QuestionAnswerer

__all__ = [
    "Answer",
    "CheckpointError",
    "DynamicBertForQuestionAnswering",
    "Evaluation",
    "Example",
    "LengthsError",
    "ModelConfig",
    "QAOutput",
    "QuestionAnswerer",
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
