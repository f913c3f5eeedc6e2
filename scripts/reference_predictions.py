"""Predictions of plain transformers with the post-processing of its QA examples, to check ours.

An independent implementation on purpose: transformers' tokenizer call, windows padded to 384
tokens, and the n-best loop of examples/pytorch/question-answering/utils_qa.py, sharing no code
with the package. Compare its output with `dynamic-tinybert eval --predictions`:

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


def squad_questions(path: str, limit: int | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append(
                    {"id": qa["id"], "question": qa["question"].lstrip(), "context": paragraph["context"]}
                )
    return rows[:limit] if limit else rows


def predict(
    model_path: str, rows: list[dict], batch_size: int, n_best: int = 20, max_answer_length: int = 30
):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path).eval()
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out")
    parser.add_argument("--compare", nargs=2, metavar=("REFERENCE", "OURS"))
    args = parser.parse_args()
    if args.compare:
        reference, ours = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.compare)
        same = sum(ours.get(k) == v for k, v in reference.items())
        print(f"agree on {same} of {len(reference)} questions ({100 * same / len(reference):.2f}%)")
        for k, v in reference.items():
            if ours.get(k) != v:
                print(f"  {k}: reference {v!r}  ours {ours.get(k)!r}")
        return 0 if same >= 0.99 * len(reference) else 1
    predictions = predict(args.model, squad_questions(args.data, args.limit), args.batch_size)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(predictions, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
