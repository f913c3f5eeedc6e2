"""Cutting (question, context) pairs into model windows with character offsets.

We use the `tokenizers` library directly, configured exactly as transformers configures a fast
tokenizer for `tokenizer(question, context, truncation="only_second", max_length=384, stride=128,
return_overflowing_tokens=True, return_offsets_mapping=True)`, so the windows are the ones the
transformers QA examples and pipeline see.

How windows overlap, on a context of 700 tokens and a question of 10 (max_length 384, stride 128):
each window holds [CLS] + 10 question tokens + [SEP] + up to 371 context tokens + [SEP]. Window 1
covers context tokens 0..370, window 2 starts 128 tokens before the end of window 1, at 243, and
covers 243..613, window 3 covers 486..699. A span that crosses the edge of one window lies whole
in the next, as long as it is shorter than the stride.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .config import WindowSettings


class QuestionCut(UserWarning):
    """A question too long for a window was cut; the model answers its beginning."""


# files a BERT tokenizer may have; those present are written back unchanged on save
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


class TokenizerError(ValueError):
    """A model folder whose tokenizer files are missing or unreadable."""


@dataclass
class Window:
    """One model input: [CLS] question [SEP] a slice of the context [SEP]."""

    input_ids: np.ndarray  # (n,) int64
    token_type_ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) character start and end of each token in the context
    context_mask: np.ndarray  # (n,) bool, True on tokens of the context

    def __len__(self) -> int:
        return len(self.input_ids)


class QATokenizer:
    def __init__(self, backend: Tokenizer, files: dict[str, bytes], settings: WindowSettings | None = None):
        self.files = files
        self.settings = settings = settings or WindowSettings()
        self._questions = backend  # plain encoding, for measuring questions
        self._pairs = Tokenizer.from_str(backend.to_str())  # windowing encoder
        for tokenizer in (self._questions, self._pairs):
            tokenizer.no_padding()
            tokenizer.no_truncation()
        self._pairs.enable_truncation(settings.max_length, stride=settings.stride, strategy="only_second")

    @classmethod
    def from_folder(cls, folder: str | Path, settings: WindowSettings | None = None) -> QATokenizer:
        """Load tokenizer.json, or build a BERT WordPiece tokenizer from vocab.txt."""
        folder = Path(folder)
        files = {name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()}
        if "tokenizer.json" not in files and "vocab.txt" not in files:
            raise TokenizerError(f"{folder} has no tokenizer.json or vocab.txt")
        try:
            options = json.loads(files.get("tokenizer_config.json", b"{}"))
            if "tokenizer.json" in files:
                backend = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
            else:
                backend = _wordpiece(folder / "vocab.txt", options)
            cls_token, sep_token = (
                _special(options, "cls_token", "[CLS]"),
                _special(options, "sep_token", "[SEP]"),
            )
            _single_separator(backend, cls_token, sep_token)
        except Exception as error:  # the tokenizers library raises plain Exception on bad files
            raise TokenizerError(f"cannot read the tokenizer in {folder}: {error}") from None
        return cls(backend, files, settings)

    @property
    def vocabulary(self) -> dict[str, int]:
        return self._questions.get_vocab()

    def encode_text(self, text: str) -> list[int]:
        """The ids of the text's wordpieces, no special tokens."""
        return self._questions.encode(text, add_special_tokens=False).ids

    def save(self, folder: str | Path) -> None:
        for name, content in self.files.items():
            (Path(folder) / name).write_bytes(content)

    def encode_windows(
        self, questions: Sequence[str], contexts: Sequence[str], cuts: list[tuple[int, str]] | None = None
    ) -> list[list[Window]]:
        """The windows of each (question, context) pair, in context order. A question too long for
        a window is cut: with a QuestionCut warning, or, where `cuts` is given, (its pair's index,
        the message) there."""
        fitted = [self._fit_question(q) for q in self._strip(questions)]
        for i, (_, message) in enumerate(fitted):
            if message and cuts is None:
                warnings.warn(message, QuestionCut, stacklevel=2)
            elif message:
                cuts.append((i, message))
        questions = [question for question, _ in fitted]
        encodings = self._pairs.encode_batch(list(zip(questions, contexts, strict=True)))
        return [[_window(e) for e in [encoding, *encoding.overflowing]] for encoding in encodings]

    def encode_examples(self, examples: Sequence) -> list[list[Window]]:
        """encode_windows on examples (with .id, .question and .context): the questions cut are
        named by their ids, in one warning."""
        cuts: list[tuple[int, str]] = []
        windows = self.encode_windows([e.question for e in examples], [e.context for e in examples], cuts)
        if len(cuts) == 1:
            index, message = cuts[0]
            warnings.warn(f"question {examples[index].id}: {message}", QuestionCut, stacklevel=2)
        elif cuts:
            ids = ", ".join(str(examples[i].id) for i, _ in cuts[:5]) + (", ..." if len(cuts) > 5 else "")
            warnings.warn(
                f"{len(cuts)} questions were cut to their first {self.settings.max_query_length} tokens, "
                f"to leave their windows room for context ({ids}); the model answers their beginnings",
                QuestionCut,
                stacklevel=2,
            )
        return windows

    @staticmethod
    def _strip(questions: Sequence[str]) -> list[str]:
        # leading spaces waste question tokens and change nothing else (as in the transformers examples)
        return [q.lstrip() for q in questions]

    def _fit_question(self, question: str) -> tuple[str, str | None]:
        """The question, cut to max_query_length tokens so that a window still has room for context,
        and where it was cut, what to tell the user (the model answers the question's beginning)."""
        limit = self.settings.max_query_length
        if len(question) <= limit:  # every token covers at least one character
            return question, None
        offsets = self._questions.encode(question, add_special_tokens=False).offsets
        if len(offsets) <= limit:
            return question, None
        cut = question[: offsets[limit - 1][1]]
        return cut, (
            f"a question of {len(offsets)} tokens was cut to its first {limit}, to leave the window "
            f"room for context: {cut[-40:]!r} is where it now ends"
        )


def _special(options: dict, name: str, default: str) -> str:
    """A special token of tokenizer_config.json: a string, or {"content": ...} in older files."""
    value = options.get(name) or default
    return value["content"] if isinstance(value, dict) else str(value)


def _wordpiece(vocab: Path, options: dict) -> Tokenizer:
    """A BERT tokenizer from vocab.txt and the options of tokenizer_config.json, built as
    transformers builds a fast tokenizer from a slow one."""
    tokenizer = Tokenizer(WordPiece.from_file(str(vocab), unk_token=_special(options, "unk_token", "[UNK]")))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=options.get("tokenize_chinese_chars", True),
        strip_accents=options.get("strip_accents"),
        lowercase=options.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _single_separator(tokenizer: Tokenizer, cls: str, sep: str) -> None:
    """[CLS] question [SEP] context [SEP], BERT's layout, whatever the tokenizer's own: a
    teacher with RoBERTa-style pairs (<s> q </s></s> c </s>) then reads what the student reads."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )


def _window(encoding) -> Window:
    sequence_ids = encoding.sequence_ids
    return Window(
        input_ids=np.asarray(encoding.ids, dtype=np.int64),
        token_type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
        offsets=np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2),
        context_mask=np.asarray([s == 1 for s in sequence_ids], dtype=bool),
    )
