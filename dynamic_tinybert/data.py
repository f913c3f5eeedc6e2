"""SQuAD-format data: reading and checking the JSON, and batching windows by length.

The format: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}]}]}]}]}. A malformed entry is reported by the id of its
question where it has one, else by its place in the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import atomic_write
from .tokenizer import Window


class SquadFormatError(ValueError):
    """A SQuAD file that is missing, not JSON, or has a malformed entry."""


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    context: str
    answers: tuple[str, ...] = ()  # gold texts; the first is the one to train on
    answer_starts: tuple[int, ...] = ()  # character offsets of the gold texts in the context
    title: str = ""
    paragraph: int = field(default=0, compare=False)  # index of its paragraph in the file


def read_squad(path: str | Path, answers: bool = True) -> list[Example]:
    """Every question of a SQuAD 1.1 JSON file, in file order; with answers=False, without their
    gold answers, which are then not read (questions to answer, not to score)."""
    path = Path(path)
    if path.is_dir():
        raise SquadFormatError(f"{path} is a folder; give a SQuAD JSON file in it")
    if not path.exists():  # a pipe (/dev/stdin, <(...)) is read as a file is
        raise SquadFormatError(f"data file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SquadFormatError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:  # Python's parser recurses once per level of [ or {
        raise SquadFormatError(f"{path} is nested too deeply to be a SQuAD file") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise SquadFormatError(f"{path} is not in SQuAD format: expected an object with a 'data' list")
    examples: list[Example] = []
    seen: set[str] = set()
    paragraph_index = 0
    for a, article in enumerate(document["data"]):
        where = f"{path}: data[{a}]"
        _expect(
            isinstance(article, dict) and isinstance(article.get("paragraphs"), list),
            where,
            "a 'paragraphs' list",
        )
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            _expect(isinstance(paragraph, dict), where, "an object")
            context = paragraph.get("context")
            _expect(isinstance(context, str), where, "a 'context' string")
            _expect(isinstance(paragraph.get("qas"), list), where, "a 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                example = _read_question(
                    qa, context, title, paragraph_index, f"{where}.qas[{q}]", path, answers
                )
                examples.append(_first_time(example, seen, path))
            paragraph_index += 1
    return examples


def _first_time(example: Example, seen: set[str], source: str | Path) -> Example:
    """The example, its id added to the ids `seen` so far in its source; refused, named, when
    it is there already."""
    if example.id in seen:
        raise SquadFormatError(f"{source}: question {example.id!r} appears twice")
    seen.add(example.id)
    return example


def read_examples(source: str | Path, answers: bool = True) -> list[Example]:
    """The questions of a SQuAD-format JSON file, or of a dataset with SQuAD's columns that the
    `datasets` library loads by name ("squad:validation", "rajpurkar/squad:train": the split after
    the colon, train by default), in order; with answers=False, without reading gold answers."""
    path = Path(source)
    if path.exists() or str(source).endswith(".json"):
        return read_squad(path, answers)
    return _dataset_examples(str(source), answers)


def _dataset_examples(source: str, answers: bool) -> list[Example]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise SquadFormatError(
            f"{source} is not a file; to load a dataset by name, pip install datasets"
        ) from None
    name, _, split = source.partition(":")
    split = split or "train"
    try:
        rows = load_dataset(name, split=split)
    except Exception as error:  # the library's and the hub's many kinds: said in one line
        raise SquadFormatError(
            f"{source} is not a file, and the dataset {name!r} (split {split!r}) could not be loaded: "
            f"{type(error).__name__}: {' '.join(str(error).split())}"
        ) from None
    examples: list[Example] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        try:
            context = row["context"]
            qa = {"id": row["id"], "question": row["question"]}
            if answers:
                gold = row["answers"]
                starts = zip(gold["text"], gold["answer_start"], strict=True)
                qa["answers"] = [{"text": text, "answer_start": start} for text, start in starts]
            if not isinstance(context, str):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise SquadFormatError(
                f"{source}: row {i} does not have SQuAD's columns (id, question, context, and answers "
                "with text and answer_start lists of one length)"
            ) from None
        # a paragraph is known by its text, the same in every run (hash() is not)
        paragraph = zlib.crc32(context.encode("utf-8", "surrogatepass"))
        title = str(row.get("title", ""))
        example = _read_question(qa, context, title, paragraph, f"{source}: row {i}", Path(source), answers)
        examples.append(_first_time(example, seen, source))
    return examples


def _read_question(
    qa: object, context: str, title: str, paragraph: int, where: str, path: Path, answers: bool = True
) -> Example:
    _expect(isinstance(qa, dict), where, "an object")
    qid = qa.get("id")
    _expect(isinstance(qid, (str, int)) and not isinstance(qid, bool) and str(qid) != "", where, "an 'id'")
    where = f"{path}: question {qid!r}"
    question = qa.get("question")
    _expect(isinstance(question, str) and has_text(question), where, "a non-empty 'question' string")
    _expect(has_text(context), where, "a non-empty context in its paragraph")
    for name, text in (("question", question), ("context", context)):
        if not is_unicode(text):
            raise SquadFormatError(f"{where}: its {name} is not valid Unicode: {_surrogate(text)}")
    if not answers:
        return Example(str(qid), question, context, (), (), title, paragraph)
    gold = qa.get("answers", [])
    _expect(isinstance(gold, list), where, "an 'answers' list")
    texts, starts = [], []
    for answer in gold:
        ok = (
            isinstance(answer, dict)
            and isinstance(answer.get("text"), str)
            and isinstance(answer.get("answer_start"), int)
            and not isinstance(answer.get("answer_start"), bool)
        )
        _expect(ok, where, "answers with a 'text' string and an integer 'answer_start'")
        _expect(has_text(answer["text"]), where, "answers whose 'text' is not empty")
        texts.append(answer["text"])
        starts.append(answer["answer_start"])
    return Example(str(qid), question, context, tuple(texts), tuple(starts), title, paragraph)


# Unicode categories with nothing to read, which the BERT tokenizer drops: controls, invisible
# formats (zero-width space, joiners, marks of direction), private use; and combining marks
# (accents, which an uncased tokenizer strips; enclosing marks), blank with no letter to sit on
_BLANK = frozenset({"Cc", "Cf", "Co", "Mn", "Me"})


def has_text(text: str) -> bool:
    """Whether a string holds anything to read: a character that is not white space, U+FFFD
    (the mark of an undecodable byte) or of a _BLANK category.

    >>> has_text(" a "), has_text(" \\u200b\\n"), has_text(""), has_text("\\x00\\ufffd\\u0300")
    (True, False, False, False)
    """
    return any(not c.isspace() and c != "\ufffd" and unicodedata.category(c) not in _BLANK for c in text)


def is_unicode(text: str) -> bool:
    """Whether a string can be encoded at all: JSON's "\\ud800" escapes, or bytes that are not
    UTF-8 read with errors="surrogateescape", leave lone surrogates that no tokenizer takes.

    >>> is_unicode("Café"), is_unicode("x \\udcff")
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate(text: str) -> str:
    """Where the first lone surrogate of a string is, for messages.

    >>> _surrogate("ab\\ud800")
    "a lone surrogate '\\\\ud800' at character 2"
    """
    i = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
    return f"a lone surrogate {ascii(text[i])} at character {i}"


def _expect(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise SquadFormatError(f"{where}: expected {what}")


def write_squad(examples: Sequence[Example], path: str | Path) -> Path:
    """Write examples as a SQuAD 1.1 file, questions grouped by article and paragraph."""
    articles: dict[str, dict[tuple[int, str], list[dict]]] = {}
    for e in examples:
        qa = {
            "id": e.id,
            "question": e.question,
            "answers": [
                {"text": t, "answer_start": s} for t, s in zip(e.answers, e.answer_starts, strict=True)
            ],
        }
        articles.setdefault(e.title, {}).setdefault((e.paragraph, e.context), []).append(qa)
    data = [
        {
            "title": title,
            "paragraphs": [{"context": context, "qas": qas} for (_, context), qas in paragraphs.items()],
        }
        for title, paragraphs in articles.items()
    ]
    text = json.dumps({"version": "1.1", "data": data}, ensure_ascii=False)
    return atomic_write(Path(path), lambda staging: staging.write_text(text, encoding="utf-8"))


# 8-byte digests of the question ids of SQuAD 1.1 dev, sorted (scripts/squad_dev_fingerprint.py):
# how training and the search recognise the test set by content, whatever the file is called
DEV_FINGERPRINT = Path(__file__).parent / "squad_dev_ids.bin"  # its question ids
DEV_CONTEXTS = Path(__file__).parent / "squad_dev_contexts.bin"  # its paragraphs, under any id
DIGEST_BYTES = 8


class SquadDevError(SquadFormatError):
    """Training or selection data that holds questions of SQuAD 1.1 dev, the test set."""


def id_digest(question_id: str) -> bytes:
    return hashlib.blake2b(question_id.encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def context_digest(context: str) -> bytes:
    """A paragraph's digest, blind to case and white space.

    >>> context_digest(" The  Cat ") == context_digest("the cat")
    True
    """
    return id_digest(" ".join(context.lower().split()))


@functools.cache
def _digests(path: Path) -> frozenset[bytes]:
    raw = path.read_bytes()
    return frozenset(raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES))


def refuse_squad_dev(examples: Sequence[Example], source: str | Path) -> None:
    """SQuAD 1.1 dev is the test set: data that holds any of its questions (by id) or any of its
    paragraphs (under other ids) is never trained or selected on, under any file name."""
    ids, paragraphs = _digests(DEV_FINGERPRINT), _digests(DEV_CONTEXTS)
    found = [e.id for e in examples if id_digest(e.id) in ids]
    digests = {c: context_digest(c) for c in {e.context for e in examples}}
    on_dev = [e.id for e in examples if digests[e.context] in paragraphs]
    if found or on_dev:
        what = f"{len(found)} questions" if found else f"{len(on_dev)} questions on paragraphs"
        raise SquadDevError(
            f"{source} holds {what} of SQuAD 1.1 dev (the test set; {(found or on_dev)[0]!r} is one): "
            "it is never trained or selected on; use a held-out split of the training data"
        )


def check_answerable(examples: Sequence[Example], source: str | Path) -> None:
    """SQuAD 1.1 scores every question against its gold answers: a question without any (an
    unanswerable SQuAD 2.0 question) is refused before any work, by its id."""
    missing = [e.id for e in examples if not e.answers]
    if missing:
        raise SquadFormatError(
            f"{source}: question {missing[0]!r} has no gold answers ({len(missing)} of {len(examples)} "
            "questions have none, as unanswerable SQuAD 2.0 questions do); the SQuAD 1.1 metric needs "
            "at least one answer per question: leave those questions out"
        )


def gold_answers(examples: Sequence[Example]) -> dict[str, list[str]]:
    """id -> gold texts, the form the metric takes."""
    return {e.id: list(e.answers) for e in examples}


def spread_sample(examples: Sequence[Example], size: int, seed: int) -> list[Example]:
    """`size` of the examples drawn at random (seeded), in their order: a sample of every file
    and article, where the first `size` would be the first file's.

    >>> [e.id for e in spread_sample([Example(str(i), "", "") for i in range(10)], 3, 0)]
    ['2', '4', '6']
    """
    chosen = np.random.default_rng(seed).permutation(len(examples))[:size]
    return [examples[i] for i in sorted(chosen)]


def batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length, longest first, so padding stays small.

    >>> list(batches_by_length([5, 9, 2, 7], 2))
    [[1, 3], [0, 2]]
    """
    order = np.argsort(-np.asarray(lengths), kind="stable").tolist()
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]


def answer_matches(example: Example) -> bool:
    """Whether the first gold answer's text is found in the context at its answer_start."""
    if not example.answers:
        return False
    start = example.answer_starts[0]
    return example.context[start : start + len(example.answers[0])] == example.answers[0]


def label_window(
    offsets: np.ndarray, context_mask: np.ndarray, start_char: int, end_char: int
) -> tuple[int, int]:
    """Token positions of the first and last token of the answer [start_char, end_char) in one
    window, or (0, 0) ([CLS]) when the answer is not wholly inside the window's context.

    Example: context tokens with offsets (0,3) (4,7) (8,11) and the answer "cat sat" at
    characters 4..11 give the positions of the tokens (4,7) and (8,11).
    """
    context = np.flatnonzero(context_mask)
    if len(context) == 0 or offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return 0, 0
    # as in the transformers examples: the last token starting at or before the answer's start,
    # and the first token ending at or after its end
    start = context[np.flatnonzero(offsets[context, 0] <= start_char)[-1]]
    end = context[np.flatnonzero(offsets[context, 1] >= end_char)[0]]
    return int(start), int(end)


def split_heldout(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Cut one file's examples into training and held-out parts by article (title), with a
    fixed seed; a file of a single article is cut by paragraph instead.

    >>> ex = [Example(str(i), "q", "c", title=f"t{i % 4}") for i in range(8)]
    >>> train, held = split_heldout(ex, 0.25, seed=0)
    >>> len(held), len({e.title for e in held})
    (2, 1)
    """
    titles = sorted({e.title for e in examples})
    key = (lambda e: e.title) if len(titles) > 1 else (lambda e: e.paragraph)
    groups = sorted({key(e) for e in examples})
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(groups))[: max(1, round(fraction * len(groups)))] if groups else []
    heldout = {groups[i] for i in chosen}
    return [e for e in examples if key(e) not in heldout], [e for e in examples if key(e) in heldout]


def training_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled, then grouped by length within pools of 50 batches so that
    padding stays small, in shuffled order; incomplete batches are left out so that every
    batch splits evenly across processes. The same (seed, epoch) always gives the same batches.

    >>> batches = training_batches([3, 1, 2, 5, 4, 6], 2, seed=0, epoch=0)
    >>> sorted(len(b) for b in batches), sorted(i for b in batches for i in b)
    ([2, 2, 2], [0, 1, 2, 3, 4, 5])
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = 50 * batch_size
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool].tolist(), key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(windows: Sequence[Window], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch of windows to its longest one (dynamic padding)."""
    width = max(len(w) for w in windows)
    ids = np.zeros((len(windows), width), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, w in enumerate(windows):
        ids[row, : len(w)] = w.input_ids
        types[row, : len(w)] = w.token_type_ids
        mask[row, : len(w)] = 1
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "token_type_ids": torch.from_numpy(types).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
    }
