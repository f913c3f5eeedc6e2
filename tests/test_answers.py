"""Logits -> spans -> ranked answers."""

from __future__ import annotations

import numpy as np
import pytest

from dynamic_tinybert.answers import (
    AnswerSettings,
    AnswerSettingsError,
    Span,
    rank_answers,
    top_indices,
    window_spans,
)
from dynamic_tinybert.tokenizer import Window

# "[CLS] who ? [SEP] the cat sat down [SEP]" over the context "the cat sat down"
CONTEXT = "the cat sat down"
WINDOW = Window(
    input_ids=np.arange(9),
    token_type_ids=np.array([0, 0, 0, 0, 1, 1, 1, 1, 1]),
    offsets=np.array([[0, 0], [0, 3], [4, 5], [0, 0], [0, 3], [4, 7], [8, 11], [12, 16], [0, 0]]),
    context_mask=np.array([False, False, False, False, True, True, True, True, False]),
)


def logits(**at: float) -> np.ndarray:
    values = np.zeros(9)
    for index, value in at.items():
        values[int(index[1:])] = value
    return values


def test_best_span_is_cut_from_the_context_by_offsets():
    spans = window_spans(WINDOW, logits(t5=5.0), logits(t6=4.0))
    best = max(spans, key=lambda s: s.logit)
    assert (best.logit, CONTEXT[best.start : best.end]) == (9.0, "cat sat")


def test_spans_outside_the_context_or_backwards_or_too_long_are_skipped():
    # the question token 2 has the best start logit and [SEP] the best end logit; neither may
    # bound an answer; nor may an end before its start, or a span of more than 2 tokens
    spans = window_spans(WINDOW, logits(t2=9.0, t6=1.0), logits(t8=9.0, t4=2.0, t7=1.0), max_answer_len=2)
    token_pairs = [(4, 4), (4, 5), (5, 5), (5, 6), (6, 6), (6, 7), (7, 7)]
    expected = {(int(WINDOW.offsets[s, 0]), int(WINDOW.offsets[e, 1])) for s, e in token_pairs}
    assert {(s.start, s.end) for s in spans} == expected
    assert len(spans) == len(token_pairs)


def test_n_best_limits_the_candidates():
    spans = window_spans(WINDOW, logits(t4=3.0, t5=2.0), logits(t7=3.0, t6=2.0), n_best=1)
    assert [(s.start, s.end) for s in spans] == [(0, 16)]


def test_the_question_cannot_crowd_the_context_out_of_the_n_best():
    """The question's tokens and [CLS] score above every context token: the best starts and ends
    are taken among the context's tokens, so the window still has its answer."""
    spans = window_spans(
        WINDOW, logits(t0=9.0, t1=8.0, t2=7.0, t5=2.0), logits(t0=9.0, t1=8.0, t3=7.0, t6=1.0), n_best=2
    )
    best = max(spans, key=lambda s: s.logit)
    assert CONTEXT[best.start : best.end] == "cat sat"


def test_ranking_merges_windows_dedupes_and_scores_sum_to_at_most_one():
    spans = [Span(2.0, 4, 7), Span(3.0, 4, 7), Span(1.0, 0, 7), Span(-1.0, 8, 11)]
    answers = rank_answers(CONTEXT, spans, top_k=5)
    assert [a.text for a in answers] == ["cat", "the cat", "sat"]
    assert answers[0].score == pytest.approx(np.exp(3) / (np.exp(3) + np.exp(1) + np.exp(-1)))
    assert sum(a.score for a in answers) == pytest.approx(1.0)
    assert answers[0].to_dict() == {"score": answers[0].score, "start": 4, "end": 7, "answer": "cat"}
    assert rank_answers(CONTEXT, []) == []


def test_top_indices_orders_best_first():
    values = np.array([0.5, 3.0, -1.0, 2.0, 2.5])
    assert top_indices(values, 3).tolist() == [1, 4, 3]
    assert top_indices(values, 10).tolist() == [1, 4, 3, 0, 2]


def test_settings_take_numpy_integers_but_not_bools():
    """As the transformers pipeline: np.int64 was refused, while top_k=True passed for 1."""
    settings = AnswerSettings(top_k=np.int64(3), max_answer_len=np.int32(15), batch_size=np.int64(8))
    assert settings.check() is settings
    for name in ("top_k", "max_answer_len", "batch_size"):
        with pytest.raises(AnswerSettingsError, match=f"^{name} must be .*integer.*got True"):
            AnswerSettings(**{name: True}).check()
    with pytest.raises(AnswerSettingsError, match="top_k must be an integer"):
        AnswerSettings(top_k=2.0).check()
