"""Which tokens to drop: the learned selector against attention received and the oracle, at
matched FLOPs (a diagnostic, not a test and not a serving mode).

For each budget, the point the model's frontier (searched with the learned selector) picks, run
  - with the learned selector;
  - with attention received (PoWER-BERT), on the same lengths, and on the most accurate point
    within the budget of a frontier searched with attention (--attention-frontier);
  - with the oracle: the question, then the context tokens ranked by where the full model puts
    its answer (selector.answer_region on a full pass first). It needs that full pass, so it is
    no method: it shows the headroom that is left.
With --by-layer, also with the oracle at one dropping layer and the learned selector at the
others, for each layer in turn: which layer's choices cost the most.

    python scripts/selector_report.py --model M --data M_heldout.json [--limit N] \
        [--budgets 0.33,0.4,0.5,0.6,0.75,0.9] [--attention-frontier F] [--by-layer] \
        [--plot out.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch import nn

from dynamic_tinybert import QuestionAnswerer, read_squad
from dynamic_tinybert.cli import check_output_file, exit_status
from dynamic_tinybert.files import atomic_write
from dynamic_tinybert.frontier import BudgetError, Frontier, flops_ratio, parse_budgets
from dynamic_tinybert.lengths import format_lengths
from dynamic_tinybert.options import UsageError, check_count
from dynamic_tinybert.precision import DTYPES
from dynamic_tinybert.selector import answer_region, context_tokens

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


class Oracle(nn.Module):
    """The model, ranking context tokens at every dropping layer (or at `layers` only, the learned
    selector at the others) by its own full pass's answer region: what a perfect selector would keep."""

    def __init__(self, model: nn.Module, layers: set[int] | None = None):
        super().__init__()
        self.model = model
        self.config = model.config
        self.layers = layers

    def forward(self, lengths=None, selector=None, **inputs):
        full = self.model(**inputs)
        if lengths is None:
            return full
        context = context_tokens(inputs["attention_mask"], inputs["token_type_ids"])
        region = answer_region(full.start_logits, full.end_logits, context)
        if self.layers is not None:
            region = [region if i in self.layers else None for i in range(self.config.num_hidden_layers)]
        return self.model(**inputs, lengths=lengths, fixed_scores=region)


def evaluate(
    qa: QuestionAnswerer, examples, windows, lengths, selector: str, oracle_layers: set[int] | None = None
) -> float:
    """F1 with the learned selector, attention received, or the oracle (at `oracle_layers` only,
    where given)."""
    if selector == "oracle":
        model, qa.model = qa.model, Oracle(qa.model, oracle_layers)
        try:
            return qa.evaluate_windows(examples, windows, lengths).f1
        finally:
            qa.model = model
    return qa.evaluate_windows(examples, windows, lengths, selector=selector).f1


def rows(
    qa: QuestionAnswerer,
    examples,
    budgets,
    attention_frontier: Frontier | None,
    progress=print,
    by_layer: bool = False,
):
    """One record per budget: the configurations and F1 of each way of choosing tokens; with
    by_layer, "oracle_at" too: F1 with the oracle at each dropping layer alone (layers from 1)."""
    windows = qa.tokenizer.encode_examples(examples)
    config, scorer = qa.model.config, qa.scorer_macs("learned")
    full_f1 = evaluate(qa, examples, windows, None, "learned")
    records = []
    for budget in budgets:
        try:
            point = qa.frontier.pick(budget=budget)
        except BudgetError as error:
            progress(f"budget {budget}: {error}")
            continue
        lengths = point.config
        record = {
            "budget": budget,
            "lengths": format_lengths(lengths, qa.num_layers),
            "flops_learned": flops_ratio(config, lengths, scorer),
            "flops_attention": flops_ratio(config, lengths),
            "full": full_f1,
        }
        for selector in ("learned", "attention", "oracle"):
            record[selector] = evaluate(qa, examples, windows, lengths, selector)
        if attention_frontier is not None:
            try:
                own = attention_frontier.pick(budget=budget)
                record["attention_frontier_lengths"] = format_lengths(own.config, qa.num_layers)
                record["attention_frontier_flops"] = own.flops_ratio
                record["attention_frontier"] = evaluate(qa, examples, windows, own.config, "attention")
            except BudgetError:
                pass
        if by_layer:
            dropping = [i for i, share in enumerate(lengths or ()) if share < 1]
            record["oracle_at"] = {
                i + 1: evaluate(qa, examples, windows, lengths, "oracle", {i}) for i in dropping
            }
        progress(json.dumps(record))
        records.append(record)
    return records


def table(records: list[dict]) -> list[str]:
    lines = [
        "| budget | lengths (learned frontier) | FLOPs | learned | attention, same lengths "
        "| attention, own frontier | oracle | oracle gap | full length |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        own = (
            f"{r['attention_frontier']:.2f} ({r['attention_frontier_flops']:.3f})"
            if "attention_frontier" in r
            else "—"
        )
        lines.append(
            f"| {r['budget']:g} | {r['lengths']} | {r['flops_learned']:.3f} | {r['learned']:.2f} | "
            f"{r['attention']:.2f} | {own} | {r['oracle']:.2f} | {r['oracle'] - r['learned']:+.2f} | "
            f"{r['full']:.2f} |"
        )
    return lines


def layer_table(records: list[dict]) -> list[str]:
    """F1 with the oracle at one dropping layer and the learned selector at the others."""
    layers = sorted({int(k) for r in records for k in r.get("oracle_at", {})})
    lines = [
        "| budget | lengths | learned | "
        + " | ".join(f"oracle at layer {k} alone" for k in layers)
        + " | oracle at every layer |",
        "|---|---|---|" + "---|" * (len(layers) + 1),
    ]
    for r in records:
        at = {int(k): v for k, v in r["oracle_at"].items()}
        cells = [f"{at[k]:.2f} ({at[k] - r['learned']:+.2f})" if k in at else "—" for k in layers]
        first = f"| {r['budget']:g} | {r['lengths']} | {r['learned']:.2f} | "
        lines.append(first + " | ".join(cells) + f" | {r['oracle']:.2f} |")
    return lines


def plot(records: list[dict], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.8))
    x = [r["flops_learned"] for r in records]
    axis.plot(x, [r["oracle"] for r in records], "^--", color="tab:green", label="oracle (headroom)")
    axis.plot(x, [r["learned"] for r in records], "o-", color="tab:blue", label="learned selector")
    axis.plot(x, [r["attention"] for r in records], "s:", color="tab:gray", label="attention, same lengths")
    own = [r for r in records if "attention_frontier" in r]
    if own:
        axis.plot(
            [r["attention_frontier_flops"] for r in own],
            [r["attention_frontier"] for r in own],
            "x-",
            color="tab:orange",
            label="attention, its own frontier",
        )
    if records:
        axis.axhline(records[0]["full"], color="tab:red", lw=1, label="full length")
    axis.set_xlabel("FLOPs, share of the full model's")
    axis.set_ylabel("F1")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    try:  # whole or not at all; the format by the name's suffix, which the staging name lacks
        atomic_write(out, lambda staging: figure.savefig(staging, dpi=110, format=out.suffix[1:].lower()))
    finally:
        plt.close(figure)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="a model with a learned selector and its frontier (default: the shipped one)"
    )
    parser.add_argument(
        "--data", required=True, help="SQuAD-format file: the held-out split, or dev for the README"
    )
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--dtype", choices=DTYPES, help="precision (default: the model's)")
    parser.add_argument("--budgets", default="0.33,0.4,0.5,0.6,0.75,0.9")
    parser.add_argument(
        "--attention-frontier", type=Path, help="a frontier.json searched with --selector attention"
    )
    parser.add_argument(
        "--by-layer", action="store_true", help="also the oracle at each dropping layer alone"
    )
    parser.add_argument("--plot", type=Path, help="a picture of the F1s: .png, .svg or .pdf")
    parser.add_argument("--json", type=Path, help="write the records here")
    return parser


def check_outputs(args: argparse.Namespace) -> None:
    """--plot and --json, refused now where they cannot be written after the work."""
    if args.plot is not None:
        check_output_file(
            args.plot, "--plot", example="selectors.png", inputs={"--data": args.data}, make_folders=True
        )
        if args.plot.suffix.lower() not in PLOT_SUFFIXES:
            raise UsageError(f"--plot {args.plot}: give a file name ending in .png (or .svg, .pdf)")
        if importlib.util.find_spec("matplotlib") is None:  # found now, not after the evaluations
            raise UsageError("--plot needs matplotlib: pip install matplotlib")
    if args.json is not None:
        check_output_file(
            args.json, "--json", example="selectors.json", inputs={"--data": args.data}, make_folders=True
        )


def report(args: argparse.Namespace) -> None:
    """The tables on stdout, the records in --json, the picture in --plot; every option checked
    before the model runs."""
    check_count(args.limit, "--limit", note=" (leave it out for every question)")
    budgets = parse_budgets(args.budgets)
    check_outputs(args)
    attention = Frontier.read(args.attention_frontier) if args.attention_frontier else None
    examples = read_squad(args.data)[: args.limit]
    if not examples:
        raise UsageError(f"{args.data} holds no questions")
    torch.manual_seed(0)
    qa = QuestionAnswerer.from_pretrained(args.model, dtype=args.dtype)
    if qa.frontier is None or qa.frontier.selector != "learned" or qa.model.selector is None:
        raise UsageError(f"{qa.folder}: the model needs a learned selector and a frontier searched with it")
    records = rows(qa, examples, budgets, attention, lambda line: print(line, file=sys.stderr), args.by_layer)
    print(f"{len(examples)} questions of {args.data}; F1 at each budget\n")
    print("\n".join(table(records)))
    if args.by_layer:
        print("\nF1 with the oracle at one dropping layer, the learned selector at the others\n")
        print("\n".join(layer_table(records)))
    if args.json:
        text = json.dumps(records, indent=1) + "\n"
        atomic_write(args.json, lambda path: path.write_text(text))
    if args.plot:
        title = f"{Path(args.data).name}, {len(examples)} questions"
        print(f"\nplot: {plot(records, args.plot, title)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return exit_status(parser.prog, lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
