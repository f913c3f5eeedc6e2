"""The Python API: pipeline-style calls, many pairs at once, long contexts, evaluation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.answers import AnswerSettingsError
from dynamic_tinybert.metrics import squad_scores

from .conftest import CONTEXT
from .test_tokenizer import LONG_CONTEXT


@pytest.fixture(scope="module")
def qa(tiny_model):
    return QuestionAnswerer.from_pretrained(tiny_model)


def test_pipeline_style_calls(qa):
    one = qa(question="How large is the basin?", context=CONTEXT)
    assert set(one) == {"score", "start", "end", "answer"}
    assert CONTEXT[one["start"] : one["end"]] == one["answer"] != ""
    assert qa({"question": "How large is the basin?", "context": CONTEXT}) == one
    several = qa(question="How large is the basin?", context=CONTEXT, top_k=3)
    assert len(several) == 3 and several[0] == one
    assert [a["score"] for a in several] == sorted((a["score"] for a in several), reverse=True)
    listed = qa([{"question": "How large is the basin?", "context": CONTEXT}] * 2)
    assert listed == [one, one]


def test_answers_in_later_windows_of_a_long_context_have_right_offsets(qa):
    [answers] = qa.answer(["How long is the 55th river?"], [LONG_CONTEXT], top_k=20)
    assert len(qa.tokenizer.encode_windows(["x"], [LONG_CONTEXT])[0]) > 2
    assert any(a.start > len(LONG_CONTEXT) * 3 // 4 for a in answers)
    for a in answers:
        assert LONG_CONTEXT[a.start : a.end] == a.text


@pytest.mark.parametrize("lengths", [None, (0.9, 0.7, 0.5, 0.3)])
def test_many_pairs_at_once_equal_each_pair_alone(qa, lengths):
    questions = ["How large is the basin?", "How long is the 12th river?", "Which nations?", "What is 42?"]
    contexts = [CONTEXT, LONG_CONTEXT, CONTEXT, LONG_CONTEXT]
    together = qa.answer(questions, contexts, top_k=2, lengths=lengths, batch_size=3)
    for q, c, answers in zip(questions, contexts, together, strict=True):
        [alone] = qa.answer([q], [c], top_k=2, lengths=lengths, batch_size=1)
        assert [(a.text, a.start) for a in alone] == [(a.text, a.start) for a in answers]
        assert [a.score for a in alone] == pytest.approx([a.score for a in answers], abs=1e-4)


def test_max_answer_len_limits_answers(qa):
    for answer in qa(question="Where?", context=LONG_CONTEXT, top_k=10, max_answer_len=2):
        assert len(qa.tokenizer._questions.encode(answer["answer"], add_special_tokens=False).ids) <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"question": " ", "context": CONTEXT}, "question 0 is empty"),
        ({"question": "Why?", "context": ""}, "context 0 is empty"),
        ({"question": "Why?", "context": CONTEXT, "top_k": 0}, "top_k"),
        ({"question": "Why?", "context": CONTEXT, "top_k": 1000}, "from 1 to 20"),
        ({"question": "Why?", "context": CONTEXT, "lengths": (1.0, 0.5)}, "4 layers"),
        ({"question": "Why?", "context": CONTEXT, "lengths": "1,1,1,1"}, "lengths must be a list of numbers"),
        ({"question": "Why?", "context": CONTEXT, "margins": "3"}, "margins must be a number or a list"),
        ({"question": "Why?", "context": "a \udcff b"}, "context 0 is not valid Unicode"),
        ({"question": "\u200b\u200d ", "context": CONTEXT}, "question 0 is empty"),
        # characters the tokenizer drops: it would answer as if no question was asked
        ({"question": "\u0000", "context": CONTEXT}, "question 0 is empty"),
        ({"question": "\u0001\u0002", "context": CONTEXT}, "question 0 is empty"),
        ({"question": "Why?", "context": "\ufffd"}, "context 0 is empty"),
        ({"question": "Why?", "context": " \u0300"}, "context 0 is empty"),
        ({"question": "Why?", "context": CONTEXT, "top_k": True}, "top_k must be an integer"),
    ],
)
def test_bad_calls_get_clear_errors(qa, kwargs, message):
    with pytest.raises(ValueError, match=message):
        qa(**kwargs)


def test_positional_forms_of_the_pipeline(qa):
    """Several dicts are a batch and two strings one (question, context) pair, as in the
    transformers pipeline (the second dict used to be dropped, two strings refused)."""
    first = {"question": "How large is the basin?", "context": CONTEXT}
    second = {"question": "Which nations?", "context": CONTEXT}
    assert qa(first, second) == [qa(first), qa(second)]
    assert qa("Which nations?", CONTEXT) == qa(second)


@pytest.mark.parametrize(
    "args",
    [
        (5,),
        ({"question": "Why?", "context": CONTEXT}, "junk"),
        ([{"question": "Why?", "context": CONTEXT}], "junk"),
        ("Why?", CONTEXT, "junk"),
        ("Why?",),
    ],
)
def test_inputs_that_are_not_pairs_get_clear_errors(qa, args):
    with pytest.raises(ValueError, match="give a dict with 'question' and 'context'"):
        qa(*args)


def test_either_dicts_or_keywords(qa):
    with pytest.raises(ValueError, match="either as positional arguments .* not both"):
        qa({"question": "Why?", "context": CONTEXT}, question="How?", context=CONTEXT)
    with pytest.raises(ValueError, match="not both"):
        qa("Why?", CONTEXT, context=CONTEXT)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"question": 5, "context": "c"}, "question"),
        ({"question": "Why?", "context": [CONTEXT, 3]}, "context"),
    ],
)
def test_arguments_of_the_wrong_type_are_named(qa, kwargs, name):
    with pytest.raises(TypeError, match=f"^{name} must be a string or a list of strings"):
        qa(**kwargs)


def test_answer_refuses_a_string_where_a_list_of_them_goes(qa):
    """answer("ab", "cd") answered one question per character."""
    with pytest.raises(ValueError, match="questions must be a list of strings, one per pair"):
        qa.answer("ab", "cd")
    with pytest.raises(ValueError, match="contexts must be a list of strings, one per pair"):
        qa.answer(["Why?"], CONTEXT)


def test_settings_take_numpy_integers_and_lengths_one_number(qa):
    one = qa(question="How large?", context=CONTEXT, top_k=3, lengths=(0.5,) * 4, max_answer_len=5)
    assert (
        qa(question="How large?", context=CONTEXT, top_k=np.int64(3), lengths=0.5, max_answer_len=np.int64(5))
        == one
    )


@pytest.mark.parametrize(
    "name", ["doc_stride", "max_seq_len", "max_question_len", "handle_impossible_answer", "align_to_words"]
)
def test_pipeline_parameters_this_reader_does_not_take_are_named(qa, name):
    with pytest.raises(ValueError, match=f"does not support the pipeline parameter {name}: "):
        qa(question="Why?", context=CONTEXT, **{name: 1})


def test_pipeline_parameters_at_the_values_this_reader_runs_with_are_taken(qa):
    settings = qa.tokenizer.settings
    same = {
        "doc_stride": settings.stride,
        "max_seq_len": settings.max_length,
        "max_question_len": settings.max_query_length,
        "handle_impossible_answer": False,
        "align_to_words": False,
    }
    assert qa(question="Why?", context=CONTEXT, **same) == qa(question="Why?", context=CONTEXT)
    with pytest.raises(ValueError, match=f"only doc_stride={settings.stride} is taken"):
        qa(question="Why?", context=CONTEXT, doc_stride=settings.stride + 1)


def test_topk_is_the_old_name_of_top_k(qa):
    with pytest.warns(FutureWarning, match="use top_k"):
        assert qa(question="Why?", context=CONTEXT, topk=2) == qa(question="Why?", context=CONTEXT, top_k=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'contxt'"):
        qa(question="Why?", contxt=CONTEXT)


def test_scores_are_over_the_20_best_spans_whatever_top_k(qa):
    one = qa(question="How large?", context=CONTEXT)
    twenty = qa(question="How large?", context=CONTEXT, top_k=20)
    assert twenty[0] == one
    assert len(twenty) == 20 and 0 < one["score"] < 1
    assert sum(a["score"] for a in twenty) == pytest.approx(1.0)


def test_evaluate_scores_its_own_predictions(qa, squad_file):
    examples = read_squad(squad_file)
    result = qa.evaluate(examples, lengths=(1.0, 0.8, 0.6, 0.4), batch_size=2)
    assert set(result.predictions) == {"q1", "q2"}
    expected = squad_scores({e.id: list(e.answers) for e in examples}, result.predictions)
    assert (result.exact_match, result.f1, result.questions) == (expected.exact_match, expected.f1, 2)
    assert result.windows == 2 and result.seconds > 0
    full = qa.evaluate(examples)
    assert result.gflops_per_window < full.gflops_per_window


def test_predict_needs_no_gold_answers_and_answers_as_a_call_does(qa, squad_file):
    examples = read_squad(squad_file)
    unlabelled = [dataclasses.replace(e, answers=(), answer_starts=()) for e in examples]
    lengths = (1.0, 0.8, 0.6, 0.4)
    scored = qa.evaluate(examples, lengths=lengths)
    predicted = qa.predict(unlabelled, lengths=lengths, top_k=3)
    assert predicted.predictions == scored.predictions
    assert (predicted.questions, predicted.windows) == (2, 2)
    assert predicted.gflops_per_window == scored.gflops_per_window
    for e in examples:
        called = qa(question=e.question, context=e.context, top_k=3, lengths=lengths)
        answers = [a.to_dict() for a in predicted.answers[e.id]]
        assert [(a["answer"], a["start"], a["end"]) for a in answers] == [
            (a["answer"], a["start"], a["end"]) for a in called
        ]
        assert [a["score"] for a in answers] == pytest.approx([a["score"] for a in called], abs=1e-6)
    with pytest.raises(AnswerSettingsError, match="top_k"):
        qa.predict(unlabelled, top_k=21)
    assert qa.predict(e for e in unlabelled).predictions == scored.predictions  # a generator, read once
    assert qa.evaluate(e for e in examples).questions == 2
    with pytest.raises(TypeError, match="Example objects"):
        qa.predict([{"id": "q1", "question": "Why?", "context": CONTEXT}])


def test_a_model_of_another_family_evaluates_and_counts_its_flops(squad_file, tmp_path):
    """DistilBERT names its feed-forward width hidden_dim: the cost model reads it (it failed
    after a whole fine-tuning run when evaluation counted FLOPs)."""
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertForQuestionAnswering

    from .conftest import FIXTURES

    tokenizer = BertTokenizerFast(vocab_file=str(FIXTURES / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(tmp_path)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=2, n_heads=2)
    DistilBertForQuestionAnswering(config).save_pretrained(tmp_path)
    evaluation = QuestionAnswerer.from_pretrained(tmp_path).evaluate(read_squad(squad_file))
    d, f, layers, n = 32, 64, 2, 384
    expected = 2 * layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * f) / 1e9
    assert evaluation.gflops_per_window_at_384 == pytest.approx(expected)
