"""A fast loop for work on the first layer's scorer (docs/selector.md, "The first scorer").

The first dropping layer always sees the whole input, so with the encoder frozen its scorer's
inputs (layer 1's post-attention states) and its target (where the full model puts its answer,
selector.answer_region) are fixed per window. This script computes them once for a sample of
training windows and for the held-out sample the selector stage selects on (the full pass, in
fp32; cached in --cache), then trains a fresh first scorer on them for --epochs, a few seconds
an epoch on 2 CPU cores instead of the stage's 12 minutes, and prints after each epoch the
held-out cross-entropy and the share of the answer region that the first layer keeps at a few
shares of the input (the forced tokens count against the share, as in the model).

    python scripts/first_scorer_probe.py --model dynamic_tinybert/default_model \\
        --data ../shared/data/train/*.json --windows 16000 --epochs 6 --selector-dropout 0.3

The train files are split as the stages split them (train_data.prepare_data, --seed).
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dynamic_tinybert import checkpoint
from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.data import collate
from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.lengths import kept_tokens
from dynamic_tinybert.optimizer import learning_rate
from dynamic_tinybert.options import UsageError, check_count
from dynamic_tinybert.selector import Scorer, SelectorConfig, answer_region, context_tokens, selector_loss
from dynamic_tinybert.train_data import heldout_sample, prepare_data
from dynamic_tinybert.train_settings import TrainSettings

SHARES = (0.35, 0.5, 0.6, 0.75)  # the first layer's shares on the shipped frontier


def encoded(tokenizer, examples) -> list:
    """Every window of the examples, in their order."""
    windows = tokenizer.encode_examples(examples)
    return [w for ws in windows for w in ws]


@torch.no_grad()
def first_layer_cases(model, windows, dtype: torch.dtype = torch.float16) -> list[dict]:
    """Per window: layer 1's post-attention states (fp16 by default: 16,000 windows take about
    2 GB), the target and the context mask; sorted by length."""
    windows = sorted(windows, key=len)
    cases = []
    for k in range(0, len(windows), 32):
        batch = collate(windows[k : k + 32], torch.device("cpu"))
        full = model(**batch, output_attended=True)
        context = context_tokens(batch["attention_mask"], batch["token_type_ids"])
        target = answer_region(full.start_logits, full.end_logits, context)
        for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
            states = full.attended[0][row, :n].to(dtype)
            cases.append({"states": states, "target": target[row, :n], "context": context[row, :n]})
    return cases


def batches(cases: list[dict], size: int, rng: np.random.Generator | None = None):
    """(states, target, context, valid), padded; neighbours in length batched together."""
    chunks = [range(i, min(i + size, len(cases))) for i in range(0, len(cases), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        width = len(cases[chunk[-1]]["target"])
        states = torch.zeros(len(chunk), width, cases[chunk[0]]["states"].shape[-1])
        target = torch.zeros(len(chunk), width)
        context = torch.zeros(len(chunk), width, dtype=torch.bool)
        valid = torch.zeros_like(context)
        for row, i in enumerate(chunk):
            n = len(cases[i]["target"])
            states[row, :n] = cases[i]["states"].float()
            target[row, :n], context[row, :n], valid[row, :n] = cases[i]["target"], cases[i]["context"], True
        yield states, target, context, valid


@torch.no_grad()
def evaluate(scorer: Scorer, cases: list[dict]) -> dict[str, float]:
    """Held-out cross-entropy, and the mean share of the answer region kept at each of SHARES."""
    scorer.eval()
    losses, kept = [], {share: [] for share in SHARES}
    for states, target, context, valid in batches(cases, 64):
        scores = scorer(states, valid & ~context, valid)
        rows = context.any(-1)
        losses.append(float(selector_loss(scores, target, context)) * int(rows.sum()))
        for share in SHARES:
            kept[share] += region_kept(scores, target, context, valid, share)[rows].tolist()
    n_rows = len(kept[SHARES[0]])
    return {"ce": sum(losses) / n_rows} | {f"kept@{s}": float(np.mean(v)) for s, v in kept.items()}


def region_kept(scores: Tensor, target: Tensor, context: Tensor, valid: Tensor, share: float) -> Tensor:
    """(B,) the share of each row's target a layer keeps when it keeps `share` of the row's
    tokens: the forced tokens (the question, [CLS], the separators) first, then the context
    tokens with the highest scores."""
    order = scores.masked_fill(~context, -math.inf).argsort(-1, descending=True)
    kept = []
    for row in range(len(scores)):
        n, forced = int(valid[row].sum()), int((valid[row] & ~context[row]).sum())
        kept.append(target[row, order[row, : max(0, kept_tokens(n, share) - forced)]].sum())
    return torch.stack(kept)


def train(scorer: Scorer, cases: list[dict], heldout: list[dict], settings: TrainSettings) -> None:
    """AdamW with the training loop's schedule (optimizer.learning_rate) for settings.epochs."""
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=settings.lr, weight_decay=0.01)
    epochs = int(settings.epochs)
    total, step, rng = epochs * math.ceil(len(cases) / 32), 0, np.random.default_rng(settings.seed)
    for epoch in range(epochs):
        scorer.train()
        for states, target, context, valid in batches(cases, 32, rng):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, settings)
            loss = selector_loss(scorer(states, valid & ~context, valid), target, context)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        result = evaluate(scorer, heldout)
        print(f"epoch {epoch + 1}: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dynamic_tinybert/default_model")
    parser.add_argument("--data", nargs="+", required=True, help="the training files, as the stages get them")
    parser.add_argument("--windows", type=int, default=16000, help="training windows sampled (0: all)")
    parser.add_argument("--heldout-limit", type=int, default=1000, help="the stage's held-out sample")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=2e-3)
    # named as the selector stage names them, whose checks they go through
    parser.add_argument("--selector-dropout", "--dropout", dest="dropout", type=float, default=0.0)
    parser.add_argument("--selector-width", "--width", dest="width", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42, help="the stages' seed: the held-out split")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/first-scorer-cache.pt"),
        help="the cases, computed once for these --model, --data, --windows, --heldout-limit and --seed",
    )
    parser.add_argument("--shipped", action="store_true", help="evaluate the model's own first scorer too")
    return parser


def probe_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainSettings:
    """The stages' split and held-out sample (SQuAD dev refused) and their learning-rate schedule,
    every number checked as training checks it (the scorer's --width and --dropout are the selector
    stage's --selector-width and --selector-dropout)."""
    check_count(args.windows, "--windows", least=0, note=" (0: all)")
    settings = TrainSettings(
        stage="selector",
        model=args.model,
        data=args.data,
        output="",
        epochs=args.epochs,
        lr=args.lr,
        warmup=0.05,
        seed=args.seed,
        heldout_limit=args.heldout_limit,
        selector_width=args.width,
        selector_dropout=args.dropout,
    )
    settings.check()
    check_output_file(args.cache, "--cache", example="first-scorer-cache.pt", make_folders=True)
    return settings


def cached_cases(args: argparse.Namespace, settings: TrainSettings, model, tokenizer) -> tuple[list, list]:
    """(training cases, held-out cases): from --cache where it holds these settings' cases, else
    computed and cached."""
    key = {k: str(getattr(args, k)) for k in ("model", "data", "windows", "heldout_limit", "seed")}
    if args.cache.is_file():
        try:
            cached = torch.load(args.cache)
        except (RuntimeError, EOFError, pickle.UnpicklingError):
            raise UsageError(
                f"--cache {args.cache} is not a cache of this script (torch cannot read it); "
                "delete it or give another --cache"
            ) from None
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["cases"], cached["heldout"]
        print(f"{args.cache} holds the cases of other settings; computing them afresh", file=sys.stderr)
    data = prepare_data(settings, tokenizer)
    windows = data.windows
    if args.windows:
        windows = [windows[i] for i in np.random.default_rng(0).permutation(len(windows))[: args.windows]]
    heldout = first_layer_cases(model, encoded(tokenizer, heldout_sample(data.heldout, settings)))
    cases = first_layer_cases(model, windows)
    cached = {"key": key, "cases": cases, "heldout": heldout}
    atomic_write(args.cache, lambda path: torch.save(cached, path))
    return cases, heldout


def probe(args: argparse.Namespace, settings: TrainSettings) -> None:
    model, tokenizer, _ = checkpoint.load(args.model)
    cases, heldout = cached_cases(args, settings, model, tokenizer)
    print(f"{len(cases)} training windows, {len(heldout)} held-out windows")
    if args.shipped and model.selector is not None:
        shipped = evaluate(model.selector.scorers[0], heldout)
        print("the model's own: " + "  ".join(f"{k} {v:.4f}" for k, v in shipped.items()))
    torch.manual_seed(args.seed)
    scorer = Scorer(SelectorConfig(model.config.hidden_size, 1, width=args.width))
    scorer.dropout = args.dropout
    train(scorer, cases, heldout, settings)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: probe(args, probe_settings(parser, args)))


if __name__ == "__main__":
    sys.exit(main())
