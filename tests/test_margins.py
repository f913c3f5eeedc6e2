"""Margins: each window keeps the tokens the learned selector scores within a margin of its best
one, so token counts follow the window (docs/selector.md, "Margins")."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamic_tinybert import QuestionAnswerer, checkpoint, model, read_squad
from dynamic_tinybert.cli import main
from dynamic_tinybert.frontier import BudgetError, Frontier, Measured, Point, flops_ratio
from dynamic_tinybert.lengths import LengthsError, counts_macs, geometric_lengths, mean_gflops, parse_margins
from dynamic_tinybert.search import Search, SearchError, SearchSettings
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
    assert_same_answers(wide, qa.evaluate_windows(examples, windows, None))
    narrow = qa.evaluate_windows(examples, windows, None, margins=(0.0,) * 4)
    assert narrow.answers.keys() == wide.answers.keys()
    assert any(narrow.answers[qid][:1] != wide.answers[qid][:1] for qid in wide.answers)


def assert_same_answers(a, b) -> None:
    """The same answers to every question, offsets included, and their scores to 1e-5 (an F1 of a
    tiny random model is the same for most changes of its answers)."""
    assert a.answers.keys() == b.answers.keys()
    for qid, answers in a.answers.items():
        spans = [(x.text, x.start, x.end) for x in b.answers[qid]]
        assert [(x.text, x.start, x.end) for x in answers] == spans
        assert [x.score for x in answers] == pytest.approx([x.score for x in b.answers[qid]], abs=1e-5)


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
    assert rows["student, full length"].split(" | ")[-1] == "1.00x |"  # its speedup over itself


def test_results_table_times_every_row_in_each_repetition(tiny_selector_model, squad_file, monkeypatch):
    """Accuracy first, then --repeats rounds that time every row once each; the speedup is the
    median of the ratios inside each round, not a ratio of medians taken at different times."""
    table = load_script("results_table")
    timed = []
    monkeypatch.setattr(table, "latency_ms", lambda model, sample, lengths, device, **o: 1.0)
    rates = iter([10.0, 5.0, 30.0, 10.0, 40.0, 40.0])  # full length, margin 2; three rounds

    def throughput(model, windows, lengths, device, **options):
        timed.append(options.get("margins"))
        return next(rates)

    monkeypatch.setattr(table, "throughput", throughput)
    args = ["--student", str(tiny_selector_model), "--dev", str(squad_file), "--speed-questions", "2"]
    args += ["--latency-windows", "1", "--dtype", "fp32", "--margins", "2", "--repeats", "3"]
    monkeypatch.setattr(sys, "argv", ["results_table.py", *args])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert table.main() == 0
    assert timed == [None, (2.0,) * 4] * 3
    margin_row = next(line for line in output.getvalue().splitlines() if "margin 2" in line)
    # ratios to full length 0.5, 0.33, 1.0: median 0.5 (the ratio of the medians, 10 / 30, would be 0.33)
    assert margin_row.split(" | ")[5:] == ["1.0", "10.0", "", "0.50x |"]
    assert "medians of 3 repetitions" in output.getvalue()


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


# --- margin points in the frontier: budgets pick them too -----------------------------------------


def test_margin_points_round_trip_and_budgets_pick_them_where_they_score_higher():
    full = Point((1.0, 1.0), 1.0, 2.0, 1.0, 70.0, 80.0, 10.0, 100.0)
    share = Point((0.5, 0.5), 0.5, 1.0, 0.5, 55.0, 65.0, 6.0, 190.0)
    margin = Point((1.0, 1.0), 0.45, None, 0.45, 68.0, 78.0, 8.0, 150.0, margins=(math.inf, 3.0))
    frontier = Frontier([share, full], margin_points=[margin])
    assert not margin.is_full and margin.config is None and margin.label == "margins inf,3"
    assert frontier.pick(budget=0.5) is margin
    assert frontier.pick(budget=0.5, margins=False) is share
    assert frontier.pick(speedup=1.8) is share  # measured: the share runs 1.9x, the margin 1.5x
    assert frontier.pick(speedup=1.5) is margin
    with pytest.raises(BudgetError, match="cheapest frontier point \\(0.450 of the full"):
        frontier.pick(budget=0.3)
    raw = json.loads(json.dumps(frontier.to_dict()))
    assert raw["margin_points"][0]["margins"] == [None, 3.0]  # JSON has no infinity
    again = Frontier.from_dict(raw)
    assert again.margin_points == [margin] and again.points == [share, full]
    assert "margin_points" not in Frontier([share, full]).to_dict()
    raw["points"].insert(0, raw["margin_points"][0])
    with pytest.raises(ValueError, match="margin_points"):
        Frontier.from_dict(raw)


def test_the_search_keeps_the_margins_that_beat_cheaper_ones_timed_and_measured(
    tiny_selector_model, tiny_model, squad_file
):
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype="fp32")
    margins = ("0", "1", "2", "4", "1e9")
    settings = SearchSettings(
        model=str(tiny_selector_model), data=[str(squad_file)], margins=margins, latency_windows=2, quiet=True
    )
    search = Search(qa, settings)
    # a full model that scores 100: every margin cheaper than it and better than the cheaper ones stays
    points = search.margin_points(Point((1.0,) * 4, 1.0, 1.0, 1.0, 100.0, 100.0), ["int8"])
    assert points and all(p.margins in {parse_margins(m, 4) for m in margins} for p in points)
    costs, f1s = [p.flops_ratio for p in points], [p.heldout_f1 for p in points]
    assert costs == sorted(set(costs)) and f1s == sorted(set(f1s)) and costs[-1] < 1.0  # 1e9: > 1
    assert all(p.latency_ms_batch1 > 0 and p.throughput_batch32 > 0 and "int8" in p.by_dtype for p in points)
    examples = read_squad(squad_file)
    result, full = qa.evaluate(examples, margins=points[0].margins), qa.evaluate(examples)
    assert points[0].flops_ratio == pytest.approx(result.gflops_per_window / full.gflops_per_window)
    assert points[0].heldout_f1 == result.f1
    attention_only = QuestionAnswerer.from_pretrained(tiny_model)
    with pytest.raises(SearchError, match="learned selector"):
        Search(attention_only, settings)
    with pytest.raises(SearchError, match="full model"):
        Search(qa, SearchSettings(model="m", data=[str(squad_file)], margins=("inf",)))


@pytest.fixture(scope="module")
def margin_frontier_model(tiny_selector_model, tmp_path_factory) -> Path:
    """The tiny selector model with a frontier whose margin point (margin 2) beats its share
    point at budget 0.5."""
    folder = tmp_path_factory.mktemp("margin-frontier") / "model"
    shutil.copytree(tiny_selector_model, folder)
    return with_small_frontier(folder, margin_point=True)


def with_small_frontier(folder: Path, margin_point: bool = False) -> Path:
    """A frontier for the 4-layer tiny model in `folder`: a share point at geometric 0.5 (held-out
    F1 60) and the full model (80); with margin_point, margin 2 too (75 at 0.45 of the FLOPs)."""
    config = QuestionAnswerer.from_pretrained(folder).model.config
    cheap = geometric_lengths(0.5, 4)
    points = [
        Point(cheap, flops_ratio(config, cheap), 0.0, 0.0, 50.0, 60.0, 5.0, 200.0),
        Point((1.0,) * 4, 1.0, 0.0, 0.0, 70.0, 80.0, 10.0, 100.0),
    ]
    margin = Point((1.0,) * 4, 0.45, None, 0.0, 65.0, 75.0, 8.0, 120.0, margins=(2.0,) * 4)
    Frontier(points, selector="learned", margin_points=[margin] if margin_point else []).save(folder)
    return folder


def test_a_budget_that_picks_a_margin_point_runs_its_margins(margin_frontier_model, squad_file, capsys):
    qa = QuestionAnswerer.from_pretrained(margin_frontier_model, dtype="fp32")
    assert qa.choose(budget=0.5) == (None, (2.0,) * 4, qa.frontier.margin_points[0])
    assert qa.choose(budget=0.5, margin_points=False).point is qa.frontier.points[0]
    question, context = "How large is the basin?", "The basin covers seven million square kilometres. " * 4
    assert qa(question=question, context=context, budget=0.5, top_k=3) == qa(
        question=question, context=context, margins=2, top_k=3
    )
    data = ["--model", str(margin_frontier_model), "--data", str(squad_file), "--json", "--quiet"]
    code, out, _ = run(capsys, "eval", *data, "--budget", "0.5")
    picked = json.loads(out)
    code_margins, out, _ = run(capsys, "eval", *data, "--margins", "2")
    asked = json.loads(out)
    assert code == code_margins == 0
    assert picked["margins"] == [2.0] * 4 and picked["lengths"] is None
    assert picked["frontier_point"]["margins"] == [2.0] * 4
    assert (picked["f1"], picked["gflops_per_window"]) == (asked["f1"], asked["gflops_per_window"])


def test_the_server_runs_margin_points_and_margins_asked_for(margin_frontier_model, tiny_model):
    """A budget picks the margin point outside SLO mode; in SLO mode it caps the ladder of shares,
    or with slo_margin_points the ladder of shares and margin points."""
    from .test_server import post, running

    qa = QuestionAnswerer.from_pretrained(margin_frontier_model, dtype="fp32")
    question, context = "How large is the basin?", "The basin covers seven million square kilometres. " * 4
    inputs = {"question": question, "context": context}
    expected = qa(question=question, context=context, margins=2, top_k=2)
    with running(qa) as url:
        replies = [
            post(url, {"inputs": inputs, "parameters": {"top_k": 2, **parameters}})
            for parameters in (
                {"budget": 0.5},
                {"margins": 2},
                {"margins": [None, 2, 2, 2]},
                {"margins": -1},
                {"margins": [None] * 4},  # keeping every token: the full model, asked for
            )
        ]
        status_shares, shares = post(
            url, {"inputs": inputs, "parameters": {"budget": 0.5, "shares_only": True}}
        )
        status_alone, alone = post(url, {"inputs": inputs, "parameters": {"shares_only": True}})
    # shares_only: the share point within the budget, which holds in every window
    assert status_shares == 200 and shares["margins"] is None and shares["frontier_point"]["index"] == 0
    assert status_alone == 422 and "give one of them" in alone["error"]
    (status, picked), (status_asked, asked), (status_inf, first_whole), (status_bad, bad), whole = replies
    assert status == status_asked == status_inf == 200
    assert picked["margins"] == [2.0] * 4 and picked["lengths"] is None
    assert picked["frontier_point"]["index"] is None and picked["frontier_point"]["margins"] == [2.0] * 4
    assert [a["answer"] for a in picked["answers"]] == [a["answer"] for a in expected]
    assert picked["answers"] == asked["answers"] and asked["frontier_point"] is None
    assert picked["gflops_per_window"] == asked["gflops_per_window"]
    assert first_whole["margins"] == [None, 2.0, 2.0, 2.0]
    assert status_bad == 400 and "margin" in bad["error"]
    assert whole[0] == 200 and whole[1]["frontier_point"] is None and whole[1]["lengths"] == [1.0] * 4
    # SLO mode: the ladder of shares, capped by the budget at the cheap one
    with running(qa, latency_slo=60_000) as url:
        status, reply = post(url, {"inputs": inputs, "parameters": {"budget": 0.5}})
    assert status == 200 and reply["frontier_point"]["index"] == 0 and reply["margins"] is None
    assert reply["lengths"] == list(qa.frontier.points[0].lengths)
    # with slo_margin_points the ladder holds the cheap shares, the margin point and the full
    # model; a budget caps it at the margin point, which runs when the server is idle
    assert qa.frontier.ladder() == [qa.frontier.points[0], qa.frontier.margin_points[0], qa.frontier.full]
    with running(qa, latency_slo=60_000, slo_margin_points=True) as url:
        status, reply = post(url, {"inputs": inputs, "parameters": {"budget": 0.5, "top_k": 2}})
        status_full, full = post(url, {"inputs": inputs})
        # margins that keep every token run as asked, whatever the controller's point
        status_whole, whole = post(url, {"inputs": inputs, "parameters": {"margins": [None] * 4}})
    assert status_whole == 200 and whole["frontier_point"] is None and whole["lengths"] == [1.0] * 4
    assert status == status_full == 200
    assert reply["frontier_point"]["index"] == 1 and reply["frontier_point"]["margins"] == [2.0] * 4
    assert reply["margins"] == [2.0] * 4 and reply["lengths"] is None
    assert reply["answers"] == asked["answers"] and reply["gflops_per_window"] == asked["gflops_per_window"]
    assert full["frontier_point"]["index"] == 2 and full["margins"] is None
    with running(QuestionAnswerer.from_pretrained(tiny_model)) as url:
        status, reply = post(url, {"inputs": inputs, "parameters": {"margins": 2}})
    assert status == 400 and "learned selector" in reply["error"]


def test_measure_only_adds_margin_points_to_a_frontier_and_keeps_earlier_ones(
    tiny_selector_model, squad_file, tmp_path, capsys
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    cheap = geometric_lengths(0.5, 4)
    full = Point((1.0,) * 4, 1.0, 0.0, 3.0, 90.0, 100.0, 10.0, 100.0)  # scores 100: margins stay below
    full.by_dtype["int8"] = Measured(90.0, 100.0, 5.0, 150.0)
    shares = [Point(cheap, 0.3, 0.0, 1.0, 0.0, 0.0, 5.0, 200.0), full]
    Frontier(shares, selector="learned", heldout={"questions": 2}).save(folder)
    run = ["search", "--model", str(folder), "--data", str(squad_file), "--measure-only"]
    run += ["--latency-windows", "2", "--quiet"]
    assert main([*run, "--margins", "0", "1e9"]) == 0  # 1e9 keeps all and costs more than full length
    first = Frontier.load(folder)
    assert [p.margins for p in first.margin_points] == [(0.0,) * 4]
    assert "int8" in first.margin_points[0].by_dtype  # the precisions the frontier was measured in
    capsys.readouterr()
    assert main([*run, "--margins", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = Frontier.load(folder)
    assert after.points == first.points and after.heldout["margins"] == ["0", "1e9", "1"]
    assert after.margin_points[0] == first.margin_points[0]  # kept, not run again
    assert {p.margins for p in after.margin_points} <= {(0.0,) * 4, (1.0,) * 4}
    assert [p.get("margins") for p in printed] == [
        None,
        None,
        *[list(p.margins) for p in after.margin_points],
    ]
    assert main(["search", "--model", str(folder), "--data", str(squad_file), "--measure-only"]) == 2
    assert "--margins" in capsys.readouterr().err


def test_eval_says_when_a_margin_point_costs_more_than_the_budget_on_its_questions(
    margin_frontier_model, squad_file, tmp_path, capsys
):
    folder = tmp_path / "model"
    shutil.copytree(margin_frontier_model, folder)
    frontier = Frontier.load(folder)
    frontier.margin_points[0].flops_ratio = 0.01  # a held-out mean these windows will not keep to
    frontier.save(folder)
    data = ["--model", str(folder), "--data", str(squad_file), "--quiet"]
    code, out, _ = run(capsys, "eval", *data, "--budget", "0.05")
    assert code == 0 and "over the budget 0.05" in out
    code, out, _ = run(capsys, "eval", *data, "--budget", "0.05", "--json")
    report = json.loads(out)
    full = json.loads(run(capsys, "eval", *data, "--json")[1])
    assert report["flops_ratio"] == pytest.approx(report["gflops_per_window"] / full["gflops_per_window"])
    assert full["flops_ratio"] == 1.0 and report["flops_ratio"] > 0.05
    code, out, _ = run(capsys, "eval", *data, "--budget", "1")  # the full model: 1.0 exactly
    assert code == 0 and "over the budget" not in out
    code, out, _ = run(capsys, "eval", *data, "--budget", "0.5", "--shares-only", "--json")
    shares = json.loads(out)
    assert code == 0 and shares["margins"] is None and shares["frontier_point"]["lengths"] != [1.0] * 4
    assert shares["flops_ratio"] <= 0.5


def test_a_calibrated_budget_picks_by_what_margin_points_cost_on_the_text(
    tiny_selector_model, squad_file, tmp_path, capsys
):
    """Held-out FLOPs that other text does not keep to: --calibrate runs the pick's margin
    points on that text's windows and picks the most accurate one whose cost there fits."""
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype="fp32")
    examples = read_squad(squad_file)
    cost = {m: qa.evaluate(examples, margins=m).flops_ratio for m in (0.0, 3.0)}
    assert cost[0.0] < cost[3.0] < 1.0
    budget = (cost[0.0] + cost[3.0]) / 2
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    config = qa.model.config
    cheap = geometric_lengths(0.2, 4)
    shares = [
        Point(cheap, flops_ratio(config, cheap), 0.0, 0.0, 50.0, 60.0, 5.0, 200.0),
        Point((1.0,) * 4, 1.0, 0.0, 0.0, 70.0, 80.0, 10.0, 100.0),
    ]
    # on the held-out questions each margin point cost half what it costs on these
    margin_points = [
        Point((1.0,) * 4, cost[m] / 2, None, 0.0, 60.0 + m, 70.0 + m, 8.0, 120.0, margins=(m,) * 4)
        for m in (0.0, 3.0)
    ]
    Frontier(shares, selector="learned", margin_points=margin_points).save(folder)
    qa = QuestionAnswerer.from_pretrained(folder, dtype="fp32")
    assert qa.evaluate(examples, budget=budget).point.margins == (3.0,) * 4  # over the budget here
    windows = sum(len(w) for w in qa.tokenizer.encode_examples(examples))
    assert windows > 1

    result = qa.evaluate(examples, budget=budget, calibrate=windows)
    three, zero = qa.frontier.margin_points[1], qa.frontier.margin_points[0]
    assert result.point is zero and result.margins == (0.0,) * 4
    # margin 3 ran first (the held-out pick) and cost twice its held-out mean: margin 0, estimated
    # at twice its own, fits, and ran to check
    assert [p for p, _ in result.calibration.measured] == [three, zero]
    assert [r for _, r in result.calibration.measured] == pytest.approx([cost[3.0], cost[0.0]])
    assert (result.calibration.windows, result.calibration.of) == (windows, windows)
    alone = qa.evaluate(examples, margins=0.0)
    assert (result.f1, result.flops_ratio) == (alone.f1, alone.flops_ratio) and result.flops_ratio <= budget
    sample = qa.evaluate(examples, budget=budget, calibrate=windows - 1).calibration
    assert (sample.windows, sample.of) == (windows - 1, windows)
    # shares cost what their windows' lengths say, run or not
    shared = qa.evaluate(examples, budget=budget, calibrate=windows, margin_points=False)
    assert shared.point == shares[0] and shared.calibration.measured == []
    with pytest.raises(ValueError, match="give a budget"):
        qa.evaluate(examples, margins=0.0, calibrate=8)
    with pytest.raises(ValueError, match="1 or more"):
        qa.evaluate(examples, budget=budget, calibrate=0)

    data = ["--model", str(folder), "--data", str(squad_file), "--quiet"]
    code, out, _ = run(capsys, "eval", *data, "--budget", str(budget), "--calibrate", "1000", "--json")
    report = json.loads(out)
    assert code == 0 and report["margins"] == [0.0] * 4 and report["f1"] == alone.f1
    assert [m["margins"] for m in report["calibration"]["measured"]] == [[3.0] * 4, [0.0] * 4]
    code, out, _ = run(capsys, "eval", *data, "--budget", str(budget), "--calibrate", "1000")
    assert code == 0 and f"calibration        {windows} of the {windows} windows" in out
    assert "margins 3,3,3,3 " in out and "over the budget" not in out
    out_file = tmp_path / "answers.json"
    code, out, _ = run(
        capsys, "predict", *data, "--out", str(out_file), "--budget", str(budget), "--calibrate", "1"
    )
    assert code == 0 and f"calibration        1 of the {windows} windows" in out
    for wrong, said in (
        (["--margins", "1"], "give --budget"),
        (["--budget", "0.5", "--calibrate", "0"], "1 or more"),
    ):
        code, _, err = run(
            capsys, "eval", *data, *wrong, *(["--calibrate", "4"] if "--margins" in wrong else [])
        )
        assert code == 2 and said in err


def confirmed_points() -> tuple[Point, Point, Point]:
    """The full model, a share point and a margin point of a 2-layer frontier, confirmed: by the
    search's F1 the share (78) beats the margin (75), by the confirmed one (50, 65) not."""
    full = Point((1.0, 1.0), 1.0, 2.0, 1.0, 70.0, 80.0, 10.0, 100.0, confirmed_f1=70.0)
    share = Point((0.5, 0.5), 0.5, 1.0, 0.5, 68.0, 78.0, 6.0, 190.0, confirmed_f1=50.0)
    margin = Point(
        (1.0, 1.0), 0.45, None, 0.45, 65.0, 75.0, 8.0, 150.0, margins=(3.0, 3.0), confirmed_f1=65.0
    )
    return full, share, margin


def test_budgets_pick_by_the_f1_confirmed_on_other_questions_where_there_is_one():
    """The search's F1 favours the points it kept (each the best of many on its questions);
    `search --confirm` scores them on others, and budgets pick by that."""
    full, share, margin = confirmed_points()
    frontier = Frontier([share, full], margin_points=[margin])
    assert frontier.pick(budget=0.5) is margin
    unconfirmed = Frontier([Point(**(vars(share) | {"confirmed_f1": None})), Point(**vars(full))])
    unconfirmed.full.confirmed_f1 = None
    assert unconfirmed.pick(budget=0.5).lengths == (0.5, 0.5)  # by the search's F1 alone: 78
    # in another precision the confirmed F1 moves by what that precision changed (here -1 and -20)
    margin.by_dtype["bf16"] = Measured(64.0, 74.0, 5.0, 200.0)
    share.by_dtype["bf16"] = Measured(67.0, 58.0, 4.0, 300.0)
    full.by_dtype["bf16"] = Measured(70.0, 80.0, 5.0, 200.0)
    assert frontier._f1(margin, "bf16") == 64.0 and frontier._f1(share, "bf16") == 30.0
    # a point added after the confirmation moves by what the full model's F1 moved (-10): 77 -> 67
    late = Point((1.0, 1.0), 0.4, None, 0.4, 66.0, 77.0, 8.0, 150.0, margins=(2.0, 2.0))
    frontier.margin_points.insert(0, late)
    assert frontier.pick(budget=0.5) is late
    # above the full model's confirmed F1 is noise: no point displaces it
    share.confirmed_f1 = 75.0
    assert frontier.pick(budget=1.0) is full
    again = Frontier.from_dict(json.loads(json.dumps(frontier.to_dict())))
    assert again.margin_points == frontier.margin_points and again.points == frontier.points
    assert "confirmed_f1" not in late.to_dict() and frontier.to_dict()["points"][0]["confirmed_f1"] == 75.0


def test_search_confirm_scores_every_point_on_other_questions_and_resumes(
    tiny_selector_model, squad_file, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    with_small_frontier(folder, margin_point=True)
    qa = QuestionAnswerer.from_pretrained(folder, dtype="fp32")
    examples = read_squad(squad_file)
    command = ["search", "--model", str(folder), "--data", str(squad_file), "--confirm", "--quiet", "--json"]
    assert main(command) == 0
    printed = json.loads(capsys.readouterr().out)
    frontier = Frontier.load(folder)
    for point in [*frontier.points, *frontier.margin_points]:
        alone = qa.evaluate(examples, lengths=point.config, margins=point.margins)
        assert (point.confirmed_f1, point.confirmed_exact_match) == (alone.f1, alone.exact_match)
    assert [p["confirmed_f1"] for p in printed] == [
        p.confirmed_f1 for p in [*frontier.points, *frontier.margin_points]
    ]
    assert frontier.heldout["confirmed"]["files"] == [str(squad_file)]
    assert frontier.heldout["confirmed"]["questions"] == len(examples)
    code, out, _ = run(capsys, "eval", "--model", str(folder), "--data", str(squad_file), "--budget", "0.5")
    picked = frontier.pick(budget=0.5)
    assert code == 0 and f"(confirmed: {picked.confirmed_f1:.2f})" in out

    from dynamic_tinybert import search as search_module

    scored = []
    evaluate = search_module.Search._evaluate
    monkeypatch.setattr(
        search_module.Search,
        "_evaluate",
        lambda self, *a, **k: scored.append(a[1:]) or evaluate(self, *a, **k),
    )
    assert main(command) == 0 and scored == []  # all scored on these questions: nothing runs again
    frontier.points[0].confirmed_f1 = None  # as if stopped before that point
    frontier.save(folder)
    assert main(command) == 0 and len(scored) == 1
    assert main([*command, "--limit", "1"]) == 0 and len(scored) == 1 + 3  # other questions: all again
    assert Frontier.load(folder).heldout["confirmed"]["questions"] == 1
    capsys.readouterr()

    # the questions the frontier was searched on are refused; --confirm runs alone
    searched = Frontier.load(folder)
    searched.heldout |= {"files": [str(squad_file)], "questions": len(examples)}
    searched.save(folder)
    assert main(command) == 2
    assert "searched on" in capsys.readouterr().err
    assert main([*command, "--margins", "1"]) == 2
    assert "runs alone" in capsys.readouterr().err


def test_the_frontier_report_compares_on_the_search_questions_and_shows_the_confirmed_f1():
    report = load_script("frontier_report")
    full, share, margin = confirmed_points()
    constant = Point((0.6, 0.6), 0.6, 1.2, 0.6, 60.0, 70.0, 7.0, 160.0)
    frontier = Frontier([share, full], constant_ratio=[constant, full], margin_points=[margin])
    # on the search's questions the share is the most accurate at no more FLOPs than the constant
    [row] = report.heldout_table(frontier)[2:]
    assert "| 0.5,0.5 | 0.500 | 78.00 | +8.00 |" in row
    assert frontier.pick(budget=0.6) is margin  # budgets go by the confirmed F1
    table = report.dtype_table(frontier, [1.0, 0.5])
    assert "confirmed F1" in table[0] and len(table[1].split("|")) == len(table[0].split("|"))
    assert table[3].startswith("| fp32 | 0.5 | margins 3,3 | 0.450 | 75.00 | -5.00 | 65.00 |")
    frontier.full.confirmed_f1 = None
    assert "confirmed" not in report.dtype_table(frontier, [0.5])[0]
