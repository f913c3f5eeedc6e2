"""Reading SQuAD files, and batching by length."""

from __future__ import annotations

import json
import os
import threading

import pytest
from tokenizers import normalizers, pre_tokenizers

from dynamic_tinybert.data import (
    SquadDevError,
    SquadFormatError,
    batches_by_length,
    gold_answers,
    has_text,
    read_squad,
    refuse_squad_dev,
)

from .conftest import DEV, needs_dev


def test_reads_questions_in_file_order(squad_file):
    examples = read_squad(squad_file)
    assert [e.id for e in examples] == ["q1", "q2"]
    assert examples[1].answers == ("nine", "nine nations")
    assert examples[0].context[examples[0].answer_starts[0] :].startswith(examples[0].answers[0])
    assert gold_answers(examples) == {"q1": ["7,000,000 square kilometres"], "q2": ["nine", "nine nations"]}


@needs_dev()
def test_reads_squad_dev():
    examples = read_squad(DEV)
    assert len(examples) == 10570
    assert examples[0].id == "56be4db0acb8001400a502ec"


def _write(tmp_path, document) -> str:
    path = tmp_path / "bad.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def _doc(qa: dict) -> dict:
    return {"data": [{"title": "t", "paragraphs": [{"context": "some text", "qas": [qa]}]}]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"version": "1.1"}, "expected an object with a 'data' list"),
        ({"data": [{"title": "t"}]}, r"data\[0\]: expected a 'paragraphs' list"),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, r"paragraphs\[0\]: expected a 'context' string"),
        (_doc({"question": "q?", "answers": []}), r"qas\[0\]: expected an 'id'"),
        (_doc({"id": True, "question": "q?", "answers": []}), r"qas\[0\]: expected an 'id'"),  # not "True"
        (
            _doc({"id": "abc", "question": "", "answers": []}),
            "question 'abc': expected a non-empty 'question'",
        ),
        (
            _doc({"id": "abc", "question": "q?", "answers": [{"text": "x"}]}),
            "question 'abc': expected answers",
        ),
        (_doc({"id": "abc", "question": "q?", "answers": "x"}), "question 'abc': expected an 'answers' list"),
        (
            _doc({"id": "abc", "question": "q?", "answers": [{"text": " ", "answer_start": 0}]}),
            "question 'abc': expected answers whose 'text' is not empty",
        ),
        (
            {"data": [{"paragraphs": [{"context": " \n", "qas": [{"id": "e", "question": "q?"}]}]}]},
            "question 'e': expected a non-empty context",
        ),
        (
            '{"data": [{"paragraphs": [{"context": "a \\ud800", "qas": [{"id": "s", "question": "q?"}]}]}]}',
            "question 's': its context is not valid Unicode: a lone surrogate '.ud800' at character 2",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # was a RecursionError traceback
        (_doc({"id": "c", "question": "\u0001\u0002", "answers": []}), "question 'c': expected a non-empty"),
    ],
)
def test_malformed_entries_are_named(tmp_path, document, message):
    with pytest.raises(SquadFormatError, match=message):
        read_squad(_write(tmp_path, document))


@pytest.mark.parametrize(
    "text", ["\u0000", "\u0001\u0002", "\ufffd", " \u0300", "\ue000", "\u200b\t", "\u20dd"]
)
def test_text_made_of_what_the_tokenizer_drops_is_blank(text):
    """The question or context had no token left, and the model answered as if none was asked."""
    normalizer = normalizers.BertNormalizer(lowercase=True)  # as an uncased BERT's tokenizer
    dropped = not pre_tokenizers.BertPreTokenizer().pre_tokenize_str(normalizer.normalize_str(text))
    assert dropped or text == "\u20dd"  # an enclosing mark alone is an [UNK] with nothing to enclose
    assert not has_text(text)
    assert has_text(text + "a") and has_text("\u0301a")


def test_duplicate_ids_and_missing_files(tmp_path):
    qa = {"id": "same", "question": "q?", "answers": []}
    document = {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [qa, qa]}]}]}
    with pytest.raises(SquadFormatError, match="'same' appears twice"):
        read_squad(_write(tmp_path, document))
    with pytest.raises(SquadFormatError, match="does not exist"):
        read_squad(tmp_path / "missing.json")
    with pytest.raises(SquadFormatError, match="is a folder; give a SQuAD JSON file in it$"):
        read_squad(tmp_path)


def test_a_pipe_is_read_as_a_file_is(squad_file, tmp_path):
    """--data /dev/stdin or <(...) was refused: "does not exist"."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_text(squad_file.read_text()))
    writer.start()
    examples = read_squad(pipe)
    writer.join()
    assert examples == read_squad(squad_file)


def test_without_answers_the_gold_answers_are_not_read(tmp_path):
    """Questions to answer (predict): answers in any form, or none, are no reason to refuse them."""
    qas = [
        {"id": "a", "question": "q?", "answers": None},
        {"id": "b", "question": "q?", "answers": {"text": ["x"], "answer_start": [0]}},
        {"id": "c", "question": "q?", "answers": [{"text": "", "answer_start": 0}]},
        {"id": "d", "question": "q?"},
    ]
    document = {"data": [{"title": "t", "paragraphs": [{"context": "some text", "qas": qas}]}]}
    examples = read_squad(_write(tmp_path, document), answers=False)
    assert [(e.id, e.answers, e.answer_starts) for e in examples] == [(q, (), ()) for q in "abcd"]
    with pytest.raises(SquadFormatError, match="question 'a': expected an 'answers' list"):
        read_squad(_write(tmp_path, document))


def test_batches_by_length_sorts_longest_first_and_covers_everything():
    lengths = [5, 9, 2, 7, 7, 1, 3]
    batches = list(batches_by_length(lengths, 3))
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [[lengths[i] for i in b] for b in batches] == [[9, 7, 7], [5, 3, 2], [1]]


def test_write_squad_round_trips(squad_file, tmp_path):
    from dynamic_tinybert.data import write_squad

    examples = read_squad(squad_file)
    again = read_squad(write_squad(examples, tmp_path / "copy.json"))
    assert [(e.id, e.question, e.context, e.answers, e.answer_starts, e.title) for e in again] == [
        (e.id, e.question, e.context, e.answers, e.answer_starts, e.title) for e in examples
    ]


def test_heldout_split_is_by_article_and_fixed_by_the_seed():
    from dynamic_tinybert.data import Example, split_heldout

    examples = [Example(str(i), "q", f"c{i // 3}", title=f"t{i // 6}", paragraph=i // 3) for i in range(60)]
    train, held = split_heldout(examples, 0.2, seed=1)
    assert {e.title for e in train}.isdisjoint({e.title for e in held})
    assert len(held) == 12 and split_heldout(examples, 0.2, seed=1) == (train, held)
    single = [Example(str(i), "q", f"c{i // 3}", title="one", paragraph=i // 3) for i in range(30)]
    train, held = split_heldout(single, 0.2, seed=1)  # one article: cut by paragraph
    assert held and {e.paragraph for e in train}.isdisjoint({e.paragraph for e in held})


@needs_dev()
def test_squad_dev_paragraphs_are_refused_under_other_ids(tmp_path):
    document = json.loads(DEV.read_text())
    article = document["data"][0]
    paragraph = article["paragraphs"][0]
    for i, qa in enumerate(paragraph["qas"]):
        qa["id"] = f"renamed-{i}"
    paragraph["context"] = "  " + paragraph["context"].upper() + "\n"  # case and spacing aside
    document["data"] = [article | {"paragraphs": [paragraph]}]
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SquadDevError, match="questions on paragraphs of SQuAD 1.1 dev .*'renamed-0' is one"):
        refuse_squad_dev(read_squad(path), path)
