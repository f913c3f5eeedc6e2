"""The official SQuAD 1.1 metric (evaluate-v1.1.py), as pure functions (docs/method.md,
"Windows, answers and the metric").

Answers are normalised (lower case, punctuation dropped, the articles a/an/the dropped, white
space collapsed); exact match and token-overlap F1 are taken against each gold answer, keeping
the maximum; both are averaged over all questions and given in percent. A question with no
prediction scores 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse white space.

    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised texts.

    >>> round(f1("Denver Broncos team", "the Denver Broncos"), 3)
    0.8
    """
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SquadScores:
    exact_match: float  # percent
    f1: float  # percent
    questions: int


def squad_scores(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> SquadScores:
    """EM and F1 over every question of `gold` (id -> gold answer texts).

    >>> squad_scores({"q1": ["Denver Broncos"], "q2": ["1990"]}, {"q1": "the Denver Broncos"})
    SquadScores(exact_match=50.0, f1=50.0, questions=2)
    """
    em = f = 0.0
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        em += max(exact_match(prediction, a) for a in answers)
        f += max(f1(prediction, a) for a in answers)
    n = len(gold)
    return SquadScores(100.0 * em / n if n else 0.0, 100.0 * f / n if n else 0.0, n)
