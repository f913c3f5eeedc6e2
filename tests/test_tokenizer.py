"""Windows: the same as transformers' fast tokenizer gives for the QA examples."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from dynamic_tinybert.config import WindowSettings
from dynamic_tinybert.data import Example
from dynamic_tinybert.tokenizer import QATokenizer, QuestionCut

from .conftest import CONTEXT

LONG_CONTEXT = " ".join(
    f"Sentence {i} tells that the {i}th river of the basin is {i * 7} kilometres long." for i in range(60)
)


def test_windows_match_transformers_fast_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tiny_model)
    questions = ["  How long is the 42th river?", "What covers the basin?"]
    contexts = [LONG_CONTEXT, CONTEXT]
    expected = reference(
        [q.lstrip() for q in questions],
        contexts,
        truncation="only_second",
        max_length=384,
        stride=128,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    windows = QATokenizer.from_folder(tiny_model).encode_windows(questions, contexts)
    flat = [w for ws in windows for w in ws]
    assert len(windows[0]) > 2 and len(windows[1]) == 1
    assert expected["overflow_to_sample_mapping"] == [i for i, ws in enumerate(windows) for _ in ws]
    for f, window in enumerate(flat):
        assert window.input_ids.tolist() == expected["input_ids"][f]
        assert window.token_type_ids.tolist() == expected["token_type_ids"][f]
        assert window.offsets.tolist() == [list(o) for o in expected["offset_mapping"][f]]
        assert window.context_mask.tolist() == [s == 1 for s in expected.sequence_ids(f)]


def test_consecutive_windows_overlap_by_the_stride_and_cover_the_context(tiny_model):
    windows = QATokenizer.from_folder(tiny_model).encode_windows(["How long?"], [LONG_CONTEXT])[0]
    spans = [w.offsets[w.context_mask] for w in windows]
    assert len(windows) > 2 and all(len(w) <= 384 for w in windows)
    for previous, following in zip(spans, spans[1:], strict=False):
        shared = {tuple(o) for o in previous} & {tuple(o) for o in following}
        assert len(shared) == 128
    assert spans[0][0, 0] == 0 and spans[-1][-1, 1] == len(LONG_CONTEXT)


def test_long_questions_are_cut_so_windows_keep_room_for_the_context(tiny_model):
    tokenizer = QATokenizer.from_folder(
        tiny_model, WindowSettings(max_length=128, stride=32, max_query_length=20)
    )
    question = "why " * 300 + "?"
    with pytest.warns(QuestionCut, match="a question of 301 tokens was cut to its first 20"):
        windows = tokenizer.encode_windows([question], [CONTEXT])[0]
    for window in windows:
        assert len(window) <= 128
        assert (window.token_type_ids == 0).sum() == 20 + 2  # [CLS], 20 question tokens, [SEP]
    covered = {tuple(o) for w in windows for o in w.offsets[w.context_mask]}
    assert max(end for _, end in covered) == len(CONTEXT)


def test_cut_questions_are_told_by_their_index_or_their_id(tiny_model):
    """The server's `cuts` list gets (pair index, message) and no warning; a dataset's cut questions
    are named by their ids, in one warning however many there are."""
    tokenizer = QATokenizer.from_folder(
        tiny_model, WindowSettings(max_length=128, stride=32, max_query_length=20)
    )
    long, short = "why " * 30 + "?", "why?"
    cuts = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        windows = tokenizer.encode_windows([short, long], [CONTEXT, CONTEXT], cuts)
    expected = tokenizer.encode_windows([short, long[:79]], [CONTEXT, CONTEXT])
    assert [w.input_ids.tolist() for ws in windows for w in ws] == [
        w.input_ids.tolist() for ws in expected for w in ws
    ]
    assert [(i, m.split(",")[0]) for i, m in cuts] == [(1, "a question of 31 tokens was cut to its first 20")]
    examples = [Example(f"q{i}", q, CONTEXT, ["x"], [0]) for i, q in enumerate([short, long, long])]
    with pytest.warns(QuestionCut) as caught:
        tokenizer.encode_examples(examples[:2])
        tokenizer.encode_examples(examples)
    assert [str(w.message).split(":")[0] for w in caught] == [
        "question q1",
        "2 questions were cut to their first 20 tokens, to leave their windows room for context "
        "(q1, q2); the model answers their beginnings",
    ]


def test_a_long_question_is_read_whole(tiny_model):
    """A chatty question of over 64 tokens (where the transformers examples cut) keeps its end,
    where what it asks is."""
    question = (
        "I read a long story about a river and a forest and many people, " * 5 + "how large is the basin?"
    )
    tokenizer = QATokenizer.from_folder(tiny_model)
    assert 64 < len(tokenizer.encode_text(question)) <= WindowSettings().max_query_length
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [window] = tokenizer.encode_windows([question], [CONTEXT])[0]
    ids = tokenizer.encode_text(question)
    assert (
        window.input_ids[1 : 1 + len(ids)].tolist() == ids
        and (window.token_type_ids == 0).sum() == len(ids) + 2
    )


def test_vocab_only_folder_tokenizes_like_tokenizer_json(tiny_model, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, tmp_path)
    from_vocab = QATokenizer.from_folder(tmp_path).encode_windows(["Où est l'Amazone?"], [LONG_CONTEXT])[0]
    from_json = QATokenizer.from_folder(tiny_model).encode_windows(["Où est l'Amazone?"], [LONG_CONTEXT])[0]
    assert len(from_vocab) == len(from_json)
    for a, b in zip(from_vocab, from_json, strict=True):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.offsets, b.offsets)
