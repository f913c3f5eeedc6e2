"""Predictions of plain transformers with the post-processing of its QA examples, to check ours.

An independent implementation on purpose: transformers' tokenizer call, windows padded to 384
tokens, and the n-best loop of examples/pytorch/question-answering/utils_qa.py, sharing no code
with the package but the command line's checks and exit codes. Compare its output with
`dynamic-tinybert eval --predictions`:

    python scripts/reference_predictions.py --model M --data ../shared/data/squad/dev-v1.1.json \
        --limit 300 --out ref.json
    dynamic-tinybert eval --model M --data ../shared/data/squad/dev-v1.1.json --limit 300 \
        --predictions ours.json
    python scripts/reference_predictions.py --compare ref.json ours.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.options import UsageError, check_count


def read_json(path: str, option: str) -> object:
    """A JSON file given as `option`; what cannot be read is bad input, said in one line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read it ({error.strerror})") from None
    except ValueError as error:  # invalid JSON or UTF-8
        raise UsageError(f"{option} {path} is not valid JSON: {error}") from None


def squad_questions(path: str, limit: int | None) -> list[dict]:
    rows = []
    try:
        for article in read_json(path, "--data")["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    question, context = qa["question"].lstrip(), paragraph["context"]
                    rows.append({"id": qa["id"], "question": question, "context": context})
    except (KeyError, TypeError, AttributeError):
        raise UsageError(
            f"--data {path} is not SQuAD-format (data, paragraphs with a context, qas with an id and "
            "a question)"
        ) from None
    if not rows:
        raise UsageError(f"--data {path} holds no questions")
    return rows[:limit]


def predict(
    model_path: str, rows: list[dict], batch_size: int, n_best: int = 20, max_answer_length: int = 30
):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForQuestionAnswering.from_pretrained(model_path).eval()
    except (OSError, ValueError) as error:  # no such folder or Hub model, a malformed one
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--model {model_path}: transformers cannot load it ({reason})") from None
    features = tokenizer(
        [r["question"] for r in rows],
        [r["context"] for r in rows],
        truncation="only_second",
        max_length=384,
        stride=128,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )
    sample_of = features.pop("overflow_to_sample_mapping")
    offsets = features.pop("offset_mapping")
    starts, ends = [], []
    with torch.no_grad():
        for i in range(0, len(sample_of), batch_size):
            batch = {k: torch.tensor(v[i : i + batch_size]) for k, v in features.items()}
            out = model(**batch)
            starts += list(out.start_logits.numpy())
            ends += list(out.end_logits.numpy())
    candidates: dict[int, list] = {}
    for f, example in enumerate(sample_of):
        sequence_ids = features.sequence_ids(f)
        offset = [o if sequence_ids[k] == 1 else None for k, o in enumerate(offsets[f])]
        # the n best among the window's own tokens: padding is there only to fill the batch, and
        # with an untrained head its logits would crowd real tokens out of the n best
        padding = np.asarray(features["attention_mask"][f]) == 0
        start_logits = np.where(padding, -np.inf, starts[f])
        end_logits = np.where(padding, -np.inf, ends[f])
        start_indexes = np.argsort(start_logits)[-1 : -n_best - 1 : -1].tolist()
        end_indexes = np.argsort(end_logits)[-1 : -n_best - 1 : -1].tolist()
        for s in start_indexes:
            for e in end_indexes:
                if offset[s] is None or offset[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(starts[f][s] + ends[f][e])
                candidates.setdefault(example, []).append((score, offset[s][0], offset[e][1]))
    predictions = {}
    for example, row in enumerate(rows):
        best = max(candidates.get(example, []), default=None, key=lambda c: c[0])
        predictions[row["id"]] = row["context"][best[1] : best[2]] if best else ""
    return predictions


def predictions_file(path: str) -> dict[str, str]:
    """{question id: answer text}, as this script and `dynamic-tinybert eval --predictions` write it."""
    predictions = read_json(path, "--compare")
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise UsageError(f"--compare {path} is not a predictions file ({{question id: answer text}})")
    return predictions


def compare(reference_path: str, ours_path: str) -> int:
    """0 where the two agree on at least 99% of the reference's questions, else 1."""
    reference, ours = predictions_file(reference_path), predictions_file(ours_path)
    if not reference:
        raise UsageError(f"--compare {reference_path} holds no predictions")
    same = sum(ours.get(k) == v for k, v in reference.items())
    print(f"agree on {same} of {len(reference)} questions ({100 * same / len(reference):.2f}%)")
    for k, v in reference.items():
        if ours.get(k) != v:
            print(f"  {k}: reference {v!r}  ours {ours.get(k)!r}")
    return 0 if same >= 0.99 * len(reference) else 1


def write_predictions(args: argparse.Namespace) -> None:
    check_count(args.limit, "--limit")
    check_count(args.batch_size, "--batch-size")
    check_output_file(
        args.out, "--out", example="reference.json", inputs={"--data": args.data}, make_folders=True
    )
    predictions = predict(args.model, squad_questions(args.data, args.limit), args.batch_size)
    text = json.dumps(predictions, indent=1, ensure_ascii=False)
    atomic_write(args.out, lambda path: path.write_text(text, encoding="utf-8"))


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--compare alone, or --model, --data and --out."""
    making = {"--model": args.model, "--data": args.data, "--out": args.out}
    if args.compare and any(v is not None for v in [*making.values(), args.limit]):
        parser.error("--compare compares two predictions files: leave out --model, --data, --out and --limit")
    missing = [name for name, value in making.items() if value is None]
    if not args.compare and missing:
        parser.error(f"give {', '.join(missing)} (or --compare REFERENCE OURS)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "OURS"))
    args = parser.parse_args(argv)
    check_options(parser, args)
    if args.compare:
        return exit_status(parser.prog, lambda: compare(*args.compare))
    return exit_status(parser.prog, lambda: write_predictions(args))


if __name__ == "__main__":
    sys.exit(main())
