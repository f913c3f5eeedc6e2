"""The official SQuAD 1.1 metric on hand-made cases, with values worked out by hand."""

from __future__ import annotations

import pytest

from dynamic_tinybert.metrics import exact_match, f1, normalize_answer, squad_scores


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  an   apple, a pear!  ", "apple pear"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("the Broncos.", "Broncos") == 1.0
    assert exact_match("Broncos team", "Broncos") == 0.0


def test_f1_counts_token_overlap():
    # prediction "denver broncos team" vs gold "denver broncos": precision 2/3, recall 1 -> 0.8
    assert f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    # repeated tokens count as often as both sides have them: one "x" in common between "x x y" and "x z"
    assert f1("x x y", "x z") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert f1("nothing shared", "at all") == 0.0
    assert f1("the", "a") == 0.0  # both empty after normalisation


def test_scores_take_the_best_gold_answer_and_count_missing_predictions_as_zero():
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["1990"], "q3": ["Santa Clara, California"]}
    predictions = {"q1": "the Broncos", "q3": "Santa Clara"}
    scores = squad_scores(gold, predictions)
    # q1: EM 1 (matches "Broncos"), F1 1; q2: missing, 0; q3: EM 0, F1 2*(1)*(2/3)/(1+2/3) = 0.8
    assert scores.questions == 3
    assert scores.exact_match == pytest.approx(100 / 3)
    assert scores.f1 == pytest.approx(100 * (1 + 0 + 0.8) / 3)
