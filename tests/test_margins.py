"""Margins: each window keeps the tokens the learned selector scores within a margin of its best
one, so token counts follow the window (docs/selector.md, "Margins")."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamic_tinybert import QuestionAnswerer, checkpoint, model, read_squad
from dynamic_tinybert.lengths import LengthsError, counts_macs, mean_gflops, parse_margins
from dynamic_tinybert.selector import SelectorError

from .conftest import kept_per_layer, load_script, with_random_selector
from .test_cli import run
from .test_model import assert_batch_equals_each_row_alone, random_batch
from .test_selector import first_layer_scores

SIZES = [61, 9, 33, 60, 2]


def test_batch_equals_each_row_alone_under_margins(tiny_model):
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, SIZES, seed=3)
    margins = (3.0, 2.0, math.inf, 1.0)
    with torch.no_grad():
        together = net(**batch, margins=margins)
        for row, n in enumerate(SIZES):
            alone = net(**{k: v[row : row + 1, :n] for k, v in batch.items()}, margins=margins)
            assert alone.token_counts == [together.token_counts[row]]
            for name in ("start_logits", "end_logits"):
                a, b = getattr(alone, name)[0], getattr(together, name)[row, :n]
                assert torch.allclose(a, b, atol=1e-5), f"row {row}: {name} differs by {(a - b).abs().max()}"
    # the counts follow each window, not one share for all: rows keep different parts of their input
    assert len({round(c[-1] / c[0], 3) for c in together.token_counts}) > 2
    for counts in together.token_counts:  # never more than a layer received; the layer of inf keeps all
        assert all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and counts[3] == counts[2]


def test_a_margin_keeps_the_forced_tokens_and_the_context_tokens_scored_within_it(tiny_model):
    n = 50
    net, batch, context, scores = first_layer_scores(tiny_model, n)
    best = float(scores[context].max())
    kept_before = 0
    for margin in (0.0, 1.0, 3.0, 6.0):
        [kept] = kept_per_layer(net, batch, None, margins=(margin, math.inf, math.inf, math.inf))
        within = {p for p in range(n) if context[p] and float(scores[p]) >= best - margin}
        assert set(kept) == {p for p in range(n) if not context[p]} | within
        assert len(kept) >= kept_before  # a wider margin keeps more
        kept_before = len(kept)
    assert kept_before < n  # the widest of these still dropped tokens: the check above had work to do


def test_infinite_and_very_wide_margins_are_the_full_model(tiny_model):
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, SIZES)
    with torch.no_grad():
        full = net(**batch)
        for margins in ((math.inf,) * 4, (1e9,) * 4):
            wide = net(**batch, margins=margins)
            assert torch.allclose(wide.start_logits, full.start_logits, atol=1e-6)
            assert wide.token_counts == [[n] * 5 for n in SIZES]


def test_margins_need_the_learned_selector_and_exclude_lengths(tiny_model):
    plain, _, _ = checkpoint.load(tiny_model)
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, [20])
    with pytest.raises(SelectorError, match="learned selector"):
        plain(**batch, margins=(3, 3, 3, 3))
    with pytest.raises(SelectorError, match="learned selector"):
        net(**batch, margins=(3, 3, 3, 3), selector="attention")
    with pytest.raises(ValueError, match="not both"):
        net(**batch, margins=(3, 3, 3, 3), lengths=(1, 1, 0.5, 0.5))
    with pytest.raises(LengthsError, match=">= 0"):
        net(**batch, margins=(3, -1, 3, 3))
    with pytest.raises(LengthsError, match="4 layers"):
        parse_margins("3,3", 4)
    assert parse_margins("2.5", 4) == (2.5,) * 4


def test_evaluate_under_margins_counts_the_flops_of_the_tokens_each_window_kept(
    tiny_selector_model, squad_file
):
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype="fp32")
    examples = read_squad(squad_file)
    windows = qa.tokenizer.encode_windows([e.question for e in examples], [e.context for e in examples])
    flat = [w for ws in windows for w in ws]
    config, scorer = qa.model.config, qa.scorer_macs()
    margins = (2.0, math.inf, 1.0, 1.0)
    counts: list[list[int]] = []
    qa.window_logits(flat, None, 8, margins=margins, token_counts=counts)
    result = qa.evaluate_windows(examples, windows, None, margins=margins)
    scored = [True, False, True, True]
    expected = np.mean([2 * counts_macs(config, c, scorer, scored) / 1e9 for c in counts])
    assert result.margins == margins and result.gflops_per_window == pytest.approx(expected)
    assert any(c[-1] < c[0] for c in counts)
    # keeping everything costs the full model plus the scorer at every layer
    wide = qa.evaluate_windows(examples, windows, None, margins=(1e9,) * 4)
    tokens = [len(w) for w in flat]
    full = mean_gflops(config, tokens)
    assert wide.gflops_per_window == pytest.approx(full + np.mean([2 * 4 * n * scorer / 1e9 for n in tokens]))
    assert wide.f1 == qa.evaluate_windows(examples, windows, None).f1


def test_cli_eval_and_ask_run_margins(tiny_selector_model, tiny_model, squad_file, capsys):
    data = ["--data", str(squad_file)]
    code, out, _ = run(capsys, "eval", "--model", str(tiny_selector_model), *data, "--margins", "2", "--json")
    report = json.loads(out)
    assert code == 0 and report["margins"] == [2.0] * 4 and report["lengths"] is None
    question = ["--question", "How large?", "--context", "The basin covers seven million square kilometres."]
    code, out, _ = run(
        capsys, "ask", "--model", str(tiny_selector_model), *question, "--margins", "inf,2,2,2", "--json"
    )
    assert code == 0 and json.loads(out)["margins"] == [None, 2.0, 2.0, 2.0]
    code, _, err = run(capsys, "eval", "--model", str(tiny_model), *data, "--margins", "2")
    assert code == 2 and "learned selector" in err
    with pytest.raises(SystemExit) as stopped:  # argparse: --margins and --lengths exclude each other
        run(capsys, "eval", *data, "--margins", "2", "--lengths", "1,1,1,1")
    assert stopped.value.code == 2


def test_margin_sweep_puts_margins_beside_full_length(tiny_selector_model, squad_file, tmp_path, capsys):
    """scripts/margin_sweep.py: full length costs 1.0 of itself; a margin that keeps everything
    answers as full length and costs more (its scorers run at every layer); a margin of 0 keeps
    little and costs less."""
    sweep = load_script("margin_sweep")
    out = tmp_path / "sweep.json"
    argv = ["--model", str(tiny_selector_model), "--data", str(squad_file), "--dtype", "fp32"]
    assert sweep.main([*argv, "--margins", "1e9", "0", "--json", str(out)]) == 0
    assert "| margins | 0,0,0,0 |" in capsys.readouterr().out
    full, wide, narrow = json.loads(out.read_text())
    assert (full["kind"], full["config"], full["flops"]) == ("lengths", "1,1,1,1", 1.0)
    assert wide["f1"] == full["f1"] and wide["flops"] > 1.0
    assert narrow["flops"] < 0.6


def test_one_number_is_the_margin_of_every_layer(tiny_selector_model):
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype="fp32")
    question, context = "How large is the basin?", "The basin covers seven million square kilometres. " * 4
    answers = qa(question=question, context=context, margins=1.5, top_k=3)
    assert answers == qa(question=question, context=context, margins=(1.5,) * 4, top_k=3)
    assert answers != qa(question=question, context=context, top_k=3)  # it did drop tokens


def test_token_counts_follow_shares_and_layers_left_out(tiny_model):
    """QAOutput.token_counts, what measured FLOPs are computed from, for a share configuration:
    n(0) then kept_tokens per layer; a layer left out (LayerDrop) passes its tokens on."""
    net, _, _ = checkpoint.load(tiny_model)
    batch = random_batch(net.config.vocab_size, [40, 11])
    with torch.no_grad():
        out = net(**batch, lengths=(0.9, 0.7, 0.5, 0.3), skip=[False, True, False, False])
    assert out.token_counts == [[40, 36, 36, 20, 12], [11, 10, 10, 6, 4]]


def test_results_table_adds_a_row_per_margin(tiny_selector_model, squad_file):
    script = Path(__file__).parents[1] / "scripts" / "results_table.py"
    args = ["--student", str(tiny_selector_model), "--dev", str(squad_file), "--speed-questions", "2"]
    args += ["--latency-windows", "1", "--dtype", "fp32", "--margins", "2", "inf"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("| student")]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines}
    assert list(rows) == ["student, full length", "student, margin 2", "student, margin inf"]
    # inf keeps every token: the full model's answers and GFLOPs
    assert rows["student, margin inf"].split(" | ")[2:5] == rows["student, full length"].split(" | ")[2:5]


def test_attention_in_groups_of_rows_answers_as_one_call(tiny_model, monkeypatch):
    """Where real tokens fill little of a batch's padded view, fused attention runs on groups of
    rows of similar counts (model._fused_attention): each row still gets what it gets alone."""
    net, _ = with_random_selector(tiny_model)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(model, "_GROUP_ROWS", 2)
    counted = lambda q, *a, **k: calls.append(q.shape[0]) or sdpa(q, *a, **k)  # noqa: E731
    monkeypatch.setattr(model.F, "scaled_dot_product_attention", counted)
    for options in ({"margins": (3.0, 2.0, math.inf, 1.0)}, {"lengths": (0.9, 0.7, 0.5, 0.3)}):
        calls.clear()
        assert_batch_equals_each_row_alone(net, **options)
        assert 2 in calls  # the batch of 5 rows ran in groups of 2
