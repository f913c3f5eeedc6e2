"""Models that transformers runs (teachers such as MPNet), behind our model's interface.

A teacher reads the student's windows: `VocabularyMap` turns student token ids into the
teacher's ids for the same wordpieces, so that both see the same pieces at the same positions,
with one separator between question and context. all-mpnet-base-v2, for example, uses
bert-base-uncased's wordpieces with ids shifted by 4 and its own special tokens:

    student  [CLS]  what  ?  [SEP]  the  cat  [SEP]        101 2054 1029 102 1996 4937 102
    teacher  <s>    what  ?  </s>   the  cat  </s>           0 2058 1033   2 2000 4941   2
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import Tensor, nn

from .model import QAOutput

# the special tokens of BERT's vocabulary, and the role each plays in any tokenizer
_ROLES = {
    "[CLS]": "cls_token",
    "[SEP]": "sep_token",
    "[PAD]": "pad_token",
    "[UNK]": "unk_token",
    "[MASK]": "mask_token",
}
# at most this share of the student's wordpieces may be missing from the teacher's vocabulary
_MAX_UNMAPPED = 0.01
# text the two tokenizers must split alike, piece for piece
PROBE_TEXT = (
    "The Amazon rainforest covers 5,500,000 km² of South America; Brazil's share is 60% (about 3.3 million "
    "square kilometres). Naïve café owners in São Paulo say: \"It's the world's largest!\" — 1990–2021."
)


class VocabularyError(ValueError):
    """A teacher whose vocabulary cannot be aligned with the student's."""


class VocabularyMap:
    """Student token id -> teacher token id, for the same wordpiece."""

    def __init__(self, table: Tensor):
        self.table = table  # (student vocabulary size,) int64

    @classmethod
    def between(cls, student_vocab: dict[str, int], teacher_tokenizer) -> VocabularyMap:
        """Align by wordpiece text, special tokens by role; raise VocabularyError when more than
        1% of the student's pieces have no counterpart or the tokenizers split text differently."""
        teacher_vocab = teacher_tokenizer.get_vocab()
        unk = teacher_tokenizer.unk_token_id
        table = torch.full((max(student_vocab.values()) + 1,), unk, dtype=torch.long)
        missing = []
        for piece, index in student_vocab.items():
            role = _ROLES.get(piece)
            special = getattr(teacher_tokenizer, role, None) if role else None
            target = teacher_vocab.get(special if special is not None else piece)
            if target is None:
                missing.append(piece)
            else:
                table[index] = target
        if len(missing) > _MAX_UNMAPPED * len(student_vocab):
            raise VocabularyError(
                f"the teacher's vocabulary cannot be aligned with the student's: {len(missing)} of "
                f"{len(student_vocab)} student wordpieces are missing from it (e.g. {', '.join(missing[:5])})"
            )
        return cls(table)

    def check_same_pieces(self, student_ids: list[int], teacher_ids: list[int]) -> None:
        """Raise VocabularyError unless the mapped student ids are the teacher's ids."""
        mapped = self.table[torch.tensor(student_ids, dtype=torch.long)].tolist()
        if mapped != teacher_ids:
            at = next((i for i, (a, b) in enumerate(zip(mapped, teacher_ids, strict=False)) if a != b), None)
            raise VocabularyError(
                "the teacher's tokenizer splits text into other wordpieces than the student's "
                f"({len(student_ids)} vs {len(teacher_ids)} pieces on the probe text, first unlike at {at})"
            )

    def __call__(self, ids: Tensor) -> Tensor:
        return self.table.to(ids.device)[ids]


class TransformersQA(nn.Module):
    """A transformers AutoModelForQuestionAnswering with our forward signature (full length only)."""

    def __init__(self, model: nn.Module, vocabulary: VocabularyMap | None = None):
        super().__init__()
        self.model = model
        self.config = model.config
        self.vocabulary = vocabulary
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        lengths=None,
        skip=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> QAOutput:
        if lengths is not None or skip:
            raise ValueError(f"length configurations need a BERT model; this is {self.config.model_type}")
        if self.vocabulary is not None:
            input_ids = self.vocabulary(input_ids)
        extra = (
            {"token_type_ids": token_type_ids}
            if self._takes_token_types and token_type_ids is not None
            else {}
        )
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **extra,
        )
        return QAOutput(
            out.start_logits,
            out.end_logits,
            list(out.hidden_states) if output_hidden_states else None,
            list(out.attentions) if output_attentions else None,
        )

    def head(self) -> nn.Linear | None:
        """The Linear(hidden, 2) QA head, where the model has the usual one."""
        head = getattr(self.model, "qa_outputs", None)
        return head if isinstance(head, nn.Linear) and head.out_features == 2 else None

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)


def load_transformers_qa(folder: Path, attentions: bool = False) -> nn.Module:
    """AutoModelForQuestionAnswering from a local folder; eager attention when attention maps
    are needed (fused kernels do not return them)."""
    try:
        from transformers import AutoModelForQuestionAnswering
    except ImportError:
        raise ImportError(
            "models other than BERT run through transformers: pip install transformers"
        ) from None
    options = {"attn_implementation": "eager"} if attentions else {}
    return AutoModelForQuestionAnswering.from_pretrained(folder, **options)
