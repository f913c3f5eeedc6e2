"""An MPNet teacher, as all-mpnet-base-v2 is, through transformers: it fine-tunes, and a BERT
student learns its answers. A file of its own, so that the parallel workers (`-n`, one file to a
worker at a time) run it beside tests/test_train.py rather than after it."""

from __future__ import annotations

import pytest

from dynamic_tinybert import QuestionAnswerer, read_squad

from .conftest import make_mpnet
from .test_train import TRAIN_FILE, common, distill, sixteen_questions, train

pytestmark = pytest.mark.skipif(not TRAIN_FILE.is_file(), reason=f"training data not found at {TRAIN_FILE}")


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory):
    return sixteen_questions(tmp_path_factory.mktemp("data"))


@pytest.mark.slow
def test_mpnet_teacher_fine_tunes_and_teaches_a_bert_student(tiny_model, sixteen, tmp_path):
    teacher = train(
        "--stage",
        "finetune",
        "--model",
        str(make_mpnet(tmp_path / "mpnet")),
        *common(sixteen, tmp_path / "teacher", 120),
    )
    # evaluated through transformers, on our windows; a tiny random MPNet learns less readily
    # than a tiny BERT, so this asks for most, not all, of the answers
    examples = read_squad(sixteen)
    taught = QuestionAnswerer.from_pretrained(teacher).evaluate(examples)
    assert taught.exact_match >= 75.0
    _, student = distill(tiny_model, teacher, sixteen, tmp_path, steps=(60, 150))
    learned = QuestionAnswerer.from_pretrained(student).evaluate(examples)
    same = sum(learned.predictions[e.id] == taught.predictions[e.id] for e in examples)
    # where the teacher splits its belief between two spans, the student may pick the other one
    assert same >= 13, f"the student answers {same} of 16 questions as its teacher does"
    assert learned.exact_match >= taught.exact_match - 12.5
