"""Start/end logits -> ranked answer spans (pure; docs/method.md, "Windows, answers and the
metric").

As in the transformers QA examples: per window, the n_best highest start logits and the n_best
highest end logits (over every token of the window, question included) form candidate pairs; a
pair counts if both ends lie in the context, the end is not before the start, and the span has at
most max_answer_len tokens. Its score is start logit + end logit, and its text is cut from the
context by character offsets. Candidates from all windows of a question are ranked together.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .options import option
from .tokenizer import Window


@dataclass(frozen=True)
class Answer:
    text: str
    score: float  # probability among the question's n-best spans (softmax of their logit sums)
    start: int  # character offsets in the context: context[start:end] == text
    end: int

    def to_dict(self) -> dict:
        """The keys the transformers question-answering pipeline returns."""
        return {"score": self.score, "start": self.start, "end": self.end, "answer": self.text}


NO_ANSWER = Answer(text="", score=0.0, start=0, end=0)
N_BEST = 20  # candidate spans per window and answers per question that scores are taken over


class AnswerSettingsError(ValueError):
    """An answer setting out of its range: its field's `name`, and the `rule` it breaks."""

    def __init__(self, name: str, rule: str):
        super().__init__(f"{name} {rule}")
        self.name, self.rule = name, rule

    def as_option(self) -> str:
        """The same, said of the command-line option (--top-k, not top_k)."""
        return f"--{self.name.replace('_', '-')} {self.rule}"


@dataclass(frozen=True)
class AnswerSettings:
    """How answers are read off the model, declared once: the Python API's defaults, the options
    of `ask` and `eval`, and the server's parameters come from these fields."""

    top_k: int = option(f"how many answers to return, 1 to {N_BEST}", default=1)
    max_answer_len: int = option("longest answer in tokens", default=30)
    batch_size: int = option("windows per forward pass", default=32)

    def check(self) -> AnswerSettings:
        """These settings, or AnswerSettingsError naming the one out of range.

        >>> AnswerSettings(top_k=21).check()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dynamic_tinybert.answers.AnswerSettingsError: top_k must be an integer from 1 to 20 ... got 21
        """
        if not _is_integer(self.top_k) or not 1 <= self.top_k <= N_BEST:
            raise AnswerSettingsError(
                "top_k",
                f"must be an integer from 1 to {N_BEST} (answers are ranked among the {N_BEST} "
                f"best candidate spans), got {self.top_k!r}",
            )
        for name in ("max_answer_len", "batch_size"):
            value = getattr(self, name)
            if not _is_integer(value) or value < 1:
                raise AnswerSettingsError(name, f"must be a positive integer, got {value!r}")
        return self


ANSWERS = AnswerSettings()  # the defaults


def _is_integer(value: object) -> bool:
    """An integer (numpy's too), not a bool: True would pass for 1 and hide a mistake.

    >>> _is_integer(3), _is_integer(np.int64(3)), _is_integer(True), _is_integer(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class Span:
    logit: float  # start logit + end logit
    start: int  # characters
    end: int


def top_indices(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values, largest first.

    >>> top_indices(np.array([0.1, 3.0, 2.0, -1.0]), 2).tolist()
    [1, 2]
    """
    if n >= len(values):
        return np.argsort(-values, kind="stable")
    top = np.argpartition(-values, n - 1)[:n]
    return top[np.argsort(-values[top], kind="stable")]


def window_spans(
    window: Window,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = N_BEST,
    max_answer_len: int = ANSWERS.max_answer_len,
) -> list[Span]:
    """The candidate spans of one window; the logits cover exactly its tokens. The n_best starts
    and ends are the context's (as the transformers pipeline masks the rest): taken over all the
    tokens, as Google's run_squad takes them, a long question's own tokens can fill them, and the
    window then has no span at all."""
    context = window.context_mask
    starts = top_indices(np.where(context, start_logits, -np.inf), n_best)[:, None]  # (n, 1)
    ends = top_indices(np.where(context, end_logits, -np.inf), n_best)[None, :]  # (1, n)
    ok = context[starts] & context[ends] & (ends >= starts) & (ends - starts + 1 <= max_answer_len)
    s, e = np.broadcast_arrays(starts, ends)
    s, e = s[ok], e[ok]
    logits = start_logits[s] + end_logits[e]
    return [
        Span(float(logit), int(window.offsets[i, 0]), int(window.offsets[j, 1]))
        for logit, i, j in zip(logits, s, e, strict=True)
    ]


def rank_answers(context: str, spans: Sequence[Span], top_k: int = 1, n_best: int = N_BEST) -> list[Answer]:
    """The top_k distinct answers among one question's candidate spans, best first.

    A span found in two overlapping windows counts once, with its better logit. Scores are the
    softmax of the logits over the n_best best distinct spans, whatever top_k is (at most n_best).

    >>> rank_answers("the cat sat", [Span(2.0, 4, 7), Span(1.0, 0, 7), Span(0.5, 4, 7)], top_k=2)[0].text
    'cat'
    """
    best: dict[tuple[int, int], float] = {}
    for span in sorted(spans, key=lambda s: -s.logit):
        best.setdefault((span.start, span.end), span.logit)
    if top_k > n_best:
        raise ValueError(f"top_k must be at most {n_best}: answers are ranked among the {n_best} best spans")
    ranked = list(best.items())[:n_best]
    if not ranked:
        return []
    logits = np.array([logit for _, logit in ranked])
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [
        Answer(context[start:end], float(p), start, end)
        for ((start, end), _), p in zip(ranked[:top_k], probs, strict=False)
    ]
