"""The frontier search, budgets, and the frontier file."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest

from dynamic_tinybert import QuestionAnswerer, precision, read_squad
from dynamic_tinybert.cli import main
from dynamic_tinybert.frontier import BudgetError, Frontier, Measured, Point, flops_ratio
from dynamic_tinybert.precision import DtypeError, PrecisionFallback
from dynamic_tinybert.search import (
    Search,
    SearchSettings,
    constant_ratios,
    crossover,
    initial_population,
    mutate,
)

from .conftest import SHARED_DATA, load_script

HELDOUT = SHARED_DATA / "train" / "tydiqa_goldp_en_train.json"
pytestmark = pytest.mark.skipif(not HELDOUT.is_file(), reason=f"data not found at {HELDOUT}")
SMALL = [
    "--limit",
    "30",
    "--population",
    "5",
    "--iterations",
    "3",
    "--mutations",
    "6",
    "--crossovers",
    "6",
    "--latency-windows",
    "4",
    "--seed",
    "7",
    "--quiet",
]


def run_search(capsys, folder, *extra: str) -> list[dict]:
    assert main(["search", "--model", str(folder), "--data", str(HELDOUT), *SMALL, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def searched(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("searched") / "model"
    shutil.copytree(tiny_model, folder)
    assert main(["search", "--model", str(folder), "--data", str(HELDOUT), *SMALL]) == 0
    return folder


def _essentials(points: list[dict]) -> list[tuple]:
    """What the search decides: configurations, their cost and accuracy (not the timings)."""
    return [
        (tuple(p["lengths"]), p["flops_ratio"], p["heldout_f1"], p["heldout_exact_match"]) for p in points
    ]


def test_frontier_is_monotone_holds_the_full_model_and_is_reproducible(
    searched, tiny_model, tmp_path, capsys
):
    frontier = Frontier.load(searched)
    costs = [p.flops_ratio for p in frontier.points]
    f1s = [p.heldout_f1 for p in frontier.points]
    assert costs == sorted(costs) and f1s == sorted(f1s)
    assert frontier.full.is_full and frontier.full.flops_ratio == 1.0
    assert all(p.latency_ms_batch1 > 0 and p.throughput_batch32 > 0 for p in frontier.points)
    assert frontier.constant_ratio and all(len(set(p.lengths)) == 1 for p in frontier.constant_ratio)
    # again, from scratch in another copy, with the same seed
    again = tmp_path / "again"
    shutil.copytree(tiny_model, again)
    assert _essentials(run_search(capsys, again)) == _essentials([p.to_dict() for p in frontier.points])


def test_search_stopped_inside_an_iteration_loses_no_evaluation_and_gives_the_same_frontier(
    searched, tiny_model, tmp_path, monkeypatch, capsys
):
    """Stopped in the middle of an iteration, the search has saved every evaluation it made; the
    same command evaluates only the rest, and ends with the frontier of a run never stopped."""
    whole = json.loads((searched / "search_state.json").read_text())["evaluated"]
    stop_at = len(whole) - 6
    folder = tmp_path / "stopped"
    shutil.copytree(tiny_model, folder)
    calls, original = [], Search._evaluate

    def evaluate(self, *args, **options):
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        calls.append(args)
        return original(self, *args, **options)

    monkeypatch.setattr(Search, "_evaluate", evaluate)
    assert main(["search", "--model", str(folder), "--data", str(HELDOUT), *SMALL]) == 130
    state = json.loads((folder / "search_state.json").read_text())
    assert len(state["evaluated"]) == stop_at > state["restart_evaluated"]  # inside an iteration
    assert not (folder / "frontier.json").exists()
    calls.clear()
    stop_at = -1
    resumed = run_search(capsys, folder)
    assert len(calls) == 6  # the evaluations the stopped run had not made, and no other
    assert _essentials(resumed) == _essentials([p.to_dict() for p in Frontier.load(searched).points])


def test_sample_draws_the_questions_over_all_the_data(searched, tiny_model, capsys):
    """A held-out split lists its files one after another, so the first N questions are the first
    file's; --sample N draws them over all of it, in their order, the same for the same seed."""
    every = read_squad(HELDOUT)
    qa = QuestionAnswerer.from_pretrained(tiny_model)

    def drawn(seed: int) -> list[int]:
        settings = SearchSettings(model=str(tiny_model), data=[str(HELDOUT)], sample=30, seed=seed)
        return [every.index(e) for e in Search(qa, settings).examples]

    positions = drawn(7)
    assert len(positions) == 30 and positions == sorted(positions) and positions[-1] > len(every) // 2
    assert drawn(7) == positions != drawn(8)
    base = ["search", "--model", str(searched), "--data", str(HELDOUT), "--seed", "7"]
    assert main([*base, "--limit", "30", "--sample", "30"]) == 2
    assert "give one" in capsys.readouterr().err
    # the frontier was searched on the first 30: measuring it on 30 drawn ones is refused
    assert main([*base, "--sample", "30", "--measure-only", "--measure-dtypes", "int8"]) == 2
    said = "measured on 30 held-out questions (" + str(HELDOUT) + "); --data, --limit, --sample give "
    assert said + "30 held-out questions drawn by --sample 30 --seed 7" in capsys.readouterr().err


def test_eval_with_a_budget_runs_the_best_point_within_it(searched, capsys, tmp_path):
    data = tmp_path / "questions.json"
    document = json.loads(HELDOUT.read_text())
    document["data"] = document["data"][40:60]
    data.write_text(json.dumps(document))
    assert main(["eval", "--model", str(searched), "--data", str(data), "--json", "--quiet"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert (
        main(["eval", "--model", str(searched), "--data", str(data), "--json", "--quiet", "--budget", "0.5"])
        == 0
    )
    half = json.loads(capsys.readouterr().out)
    assert half["gflops_per_window"] <= 0.5 * full["gflops_per_window"]
    frontier = Frontier.load(searched)
    expected = frontier.pick(budget=0.5)
    assert half["frontier_point"]["heldout_f1"] == expected.heldout_f1
    assert half["lengths"] == list(expected.lengths)


def test_budgets_in_the_python_api(searched):
    qa = QuestionAnswerer.from_pretrained(searched)
    example = read_squad(HELDOUT)[0]
    cheapest = qa.frontier.points[0]
    answer = qa(question=example.question, context=example.context, budget=cheapest.flops_ratio)
    assert answer == qa(question=example.question, context=example.context, lengths=cheapest.config)
    with pytest.raises(BudgetError, match="beyond the cheapest"):
        qa(question=example.question, context=example.context, budget=cheapest.flops_ratio / 2)
    with pytest.raises(BudgetError, match="outside"):
        qa(question=example.question, context=example.context, budget=1.5)


def test_a_model_without_a_frontier_refuses_budgets(tiny_model, squad_file, capsys):
    assert main(["eval", "--model", str(tiny_model), "--data", str(squad_file), "--budget", "0.5"]) == 2
    assert "has no frontier" in capsys.readouterr().err


def _point(lengths, f1, ratio, throughput=None) -> Point:
    return Point(tuple(lengths), ratio, 1.0, 1.0, f1 - 5, f1, 1.0, throughput)


def test_pick_takes_the_most_accurate_point_that_fits():
    frontier = Frontier(
        [
            _point((0.3, 0.3), 60, 0.3, 300),
            _point((0.6, 0.5), 75, 0.55, 170),
            _point((1, 0.7), 80, 0.8, 120),
            _point((1, 1), 82, 1.0, 100),
        ]
    )
    assert frontier.pick(budget=0.6).lengths == (0.6, 0.5)
    assert frontier.pick(budget=1.0).is_full
    assert frontier.pick(speedup=1.5).lengths == (0.6, 0.5)
    assert frontier.pick(speedup=3).lengths == (0.3, 0.3)
    with pytest.raises(BudgetError, match="beyond the cheapest"):
        frontier.pick(budget=0.2)
    with pytest.raises(BudgetError, match="beyond"):
        frontier.pick(speedup=4)


def test_pick_reads_accuracy_and_speed_in_the_precision_in_use():
    points = [
        _point((0.3, 0.3), 60, 0.3, 300),
        _point((0.6, 0.5), 75, 0.55, 170),
        _point((1, 1), 82, 1.0, 100),
    ]
    # in bf16 the cheap point gains little speed and the middle one scores higher than at 0.3
    for point, measured in zip(points, [(70, 260), (74, 250), (81.9, 240)], strict=True):
        point.by_dtype["bf16"] = Measured(0.0, measured[0], 1.0, measured[1])
    frontier = Frontier(points)
    assert frontier.pick(speedup=2).lengths == (0.3, 0.3)  # fp32: 3x and 1.7x
    with pytest.raises(BudgetError, match="beyond"):
        frontier.pick(speedup=2, dtype="bf16")  # bf16: 1.08x and 1.04x
    assert frontier.pick(speedup=1.05, dtype="bf16").lengths == (0.3, 0.3)
    assert frontier.pick(budget=0.6, dtype="bf16").lengths == (0.6, 0.5)
    with pytest.raises(BudgetError, match="no int8 timings"):
        frontier.pick(speedup=1.5, dtype="int8")
    # without int8 measurements, accuracy falls back to the frontier's own
    assert frontier.pick(budget=0.6, dtype="int8").lengths == (0.6, 0.5)
    # a point above full length in bf16 (noise) ties with it there, and the full model wins
    points[1].by_dtype["bf16"].heldout_f1 = 82.5
    assert frontier.pick(budget=1.0, dtype="bf16").is_full
    assert frontier.pick(budget=0.6, dtype="bf16").lengths == (0.6, 0.5)
    points[1].by_dtype["bf16"].heldout_f1 = 74
    # bf16 loses 0.1 F1 at full length and runs 2.4x faster: the default precision
    assert frontier.fastest_close_to_fp32() == "bf16"
    frontier.full.by_dtype["bf16"].heldout_f1 = 81.7
    assert frontier.fastest_close_to_fp32() == "fp32"
    again = Frontier.from_dict(json.loads(json.dumps(frontier.to_dict())))
    assert again.points[0].by_dtype["bf16"] == points[0].by_dtype["bf16"]
    assert "by_dtype" not in Frontier([_point((1, 1), 82, 1.0)]).to_dict()["points"][0]


def test_the_search_measures_its_frontier_in_other_precisions_and_picks_the_default(
    searched, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "measured"
    shutil.copytree(searched, folder)
    before = Frontier.load(folder)
    dtypes = ["int8", "bf16"] if precision.cpu_has_bf16() else ["int8"]
    run = ["search", "--model", str(folder), "--data", str(HELDOUT), *SMALL, "--measure-dtypes", *dtypes]
    assert main([*run, "fp32", "--measure-only"]) == 0  # fp32, the frontier's own: timed again
    after = Frontier.load(folder)
    assert [p.throughput_batch32 for p in after.points] != [p.throughput_batch32 for p in before.points]
    assert _essentials([p.to_dict() for p in after.points]) == _essentials(
        [p.to_dict() for p in before.points]
    )
    for point in [*after.points, *after.constant_ratio]:
        assert set(point.by_dtype) == set(dtypes)
        assert all(0 <= m.heldout_f1 <= 100 and m.latency_ms_batch1 > 0 for m in point.by_dtype.values())
    assert after.dtypes == ["fp32", *dtypes]
    assert after.default_dtype == after.fastest_close_to_fp32()
    # the model then runs in its default precision unless told otherwise
    assert QuestionAnswerer.from_pretrained(folder).dtype == after.default_dtype
    assert QuestionAnswerer.from_pretrained(folder, dtype="fp32").dtype == "fp32"
    # measuring on other held-out questions than the frontier's is refused
    assert main([*run, "--measure-only", "--limit", "20"]) == 2
    assert "measured on 30 held-out questions" in capsys.readouterr().err
    # a search measures its own frontier the same way, and resumes those measurements too
    fresh = tmp_path / "fresh"
    shutil.copytree(searched, fresh)
    (fresh / "frontier.json").unlink()
    assert (
        main(["search", "--model", str(fresh), "--data", str(HELDOUT), *SMALL, "--measure-dtypes", "int8"])
        == 0
    )
    measured = Frontier.load(fresh)
    state = json.loads((fresh / "search_state.json").read_text())
    for point in measured.points:
        key = ",".join(str(round(share * 20)) for share in point.lengths)
        assert state["measured"]["int8"][key] == asdict(point.by_dtype["int8"])
    (fresh / "frontier.json").unlink()
    monkeypatch.setattr(Search, "_measure", lambda *_: pytest.fail("measured again"))
    assert (
        main(["search", "--model", str(fresh), "--data", str(HELDOUT), *SMALL, "--measure-dtypes", "int8"])
        == 0
    )
    assert Frontier.load(fresh).to_dict() == measured.to_dict()


def test_a_default_precision_the_machine_cannot_run_falls_back_to_fp32_with_a_warning(
    searched, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "bf16-default"
    shutil.copytree(searched, folder)
    frontier = Frontier.load(folder)
    frontier.default_dtype = "bf16"
    frontier.save(folder)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.warns(PrecisionFallback, match="runs in bf16 by default; here it runs in fp32 instead"):
        assert QuestionAnswerer.from_pretrained(folder).dtype == "fp32"
    # the command line says so in one line
    assert main(["ask", "--model", str(folder), "--question", "who?", "--context", "Ann wrote it."]) == 0
    assert capsys.readouterr().err.startswith(f"dynamic-tinybert: note: {folder} runs in bf16 by default")
    with pytest.raises(DtypeError, match="AVX512-BF16"):  # asked for by name: refused
        QuestionAnswerer.from_pretrained(folder, dtype="bf16")


def test_flops_ratio_is_the_largest_over_window_lengths(tiny_model):
    config = QuestionAnswerer.from_pretrained(tiny_model).model.config
    from dynamic_tinybert.lengths import encoder_macs

    ratio = flops_ratio(config, (0.5, 0.5, 0.5, 0.5))
    for n in (40, 100, 250, 384):
        assert encoder_macs(config, n, (0.5, 0.5, 0.5, 0.5)) <= ratio * encoder_macs(config, n) + 1e-6


def test_operators_stay_on_the_grid_and_non_increasing():
    rng = np.random.default_rng(0)
    for _ in range(200):
        parent = tuple(sorted(rng.integers(1, 21, size=6), reverse=True))
        child = mutate(parent, rng, 0.5, 20)
        assert all(1 <= u <= 20 for u in child) and list(child) == sorted(child, reverse=True)
        other = tuple(sorted(rng.integers(1, 21, size=6), reverse=True))
        mixed = crossover(parent, other)
        assert list(mixed) == sorted(mixed, reverse=True)
    constant = constant_ratios(6, 20, 20, 0.8)
    assert constant[-1] == (20,) * 6 and all(len(set(p)) == 1 for p in constant)
    assert constant[0][0] == 6  # ceil(0.8 ** 6 * 20)


def test_initial_population_keeps_the_first_layers_whole_too():
    population = initial_population(6, 20, 20, 0.8)
    constant = constant_ratios(6, 20, 20, 0.8)
    assert population[: len(constant)] == constant
    prefixes = population[len(constant) :]
    for k in range(1, 6):  # the first k layers whole, the rest at one share, for several shares
        with_k = [p for p in prefixes if p[:k] == (20,) * k and p[k] < 20]
        assert len({p[k] for p in with_k}) >= 3 and all(len(set(p[k:])) == 1 for p in with_k)
    assert all(p[0] == 20 and list(p) == sorted(p, reverse=True) for p in prefixes)


def test_plot_writes_a_png(searched, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "frontier.png"
    assert main(["plot", "--model", str(searched), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad, words in (
        (tmp_path / "picture", "ending in .png"),
        (tmp_path / "x.txt", "ending in .png"),
        (tmp_path, "is a folder"),
    ):
        assert main(["plot", "--model", str(searched), "--out", str(bad)]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "picture.png").exists()  # matplotlib would have added the suffix


def test_a_finished_search_goes_on_for_more_iterations_as_one_run_would(
    searched, tiny_model, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "extended"
    shutil.copytree(tiny_model, folder)
    fewer = [*SMALL]
    fewer[fewer.index("--iterations") + 1] = "1"
    assert main(["search", "--model", str(folder), "--data", str(HELDOUT), *fewer]) == 0
    first = json.loads((folder / "search_state.json").read_text())
    assert first["iteration"] == 1
    capsys.readouterr()
    calls = []
    original = QuestionAnswerer.evaluate_windows
    monkeypatch.setattr(
        QuestionAnswerer, "evaluate_windows", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    extended = run_search(capsys, folder)
    state = json.loads((folder / "search_state.json").read_text())
    assert state["iteration"] == 3
    assert len(calls) == len(state["evaluated"]) - len(first["evaluated"])  # nothing evaluated twice
    assert _essentials(extended) == _essentials([p.to_dict() for p in Frontier.load(searched).points])


def test_the_frontier_records_its_selector_and_budgets_hold_for_that_one(
    tiny_selector_model, tmp_path, capsys, squad_file
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    learned = run_search(capsys, folder)
    frontier = Frontier.load(folder)
    assert frontier.selector == "learned"
    qa = QuestionAnswerer.from_pretrained(folder)
    # the cost of a point counts the selector's scorers
    point = frontier.points[0]
    assert point.flops_ratio == flops_ratio(qa.model.config, point.config, qa.scorer_macs("learned"))
    with pytest.raises(BudgetError, match="searched with the learned selector"):
        qa(question="How large?", context="The basin is large.", budget=1.0, selector="attention")
    assert (
        main(
            [
                "eval",
                "--model",
                str(folder),
                "--data",
                str(squad_file),
                "--budget",
                "1",
                "--selector",
                "attention",
            ]
        )
        == 2
    )
    assert "--selector learned" in capsys.readouterr().err
    attention = run_search(capsys, folder, "--selector", "attention")
    assert Frontier.load(folder).selector == "attention"
    assert _essentials(attention) != _essentials(learned)


def test_selector_report_compares_the_selectors_and_the_oracle_at_matched_flops(
    tiny_selector_model, tmp_path, capsys
):
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    points = run_search(capsys, folder)
    # the cheapest point of the frontier, and the full model: budgets the frontier can meet
    cheapest = min(p["flops_ratio"] for p in points)
    budgets = [round(cheapest + 0.005, 3), 1.0]
    assert budgets[0] < 1
    report = load_script("selector_report")
    out = tmp_path / "report.json"
    argv = [
        "--model",
        str(folder),
        "--data",
        str(HELDOUT),
        "--limit",
        "20",
        "--budgets",
        ",".join(map(str, budgets)),
        "--json",
        str(out),
        "--by-layer",
    ]
    assert report.main(argv) == 0
    records = json.loads(out.read_text())
    assert [r["budget"] for r in records] == budgets
    qa = QuestionAnswerer.from_pretrained(folder)
    examples = read_squad(HELDOUT)[:20]
    for record in records:
        lengths = qa.frontier.pick(budget=record["budget"]).config
        assert record["learned"] == qa.evaluate(examples, lengths=lengths).f1
        assert record["attention"] == qa.evaluate(examples, lengths=lengths, selector="attention").f1
        assert record["flops_learned"] <= record["budget"] + 1e-9
        # --by-layer: the oracle at each dropping layer alone, layers counted from 1
        dropping = {str(i + 1) for i, share in enumerate(lengths or ()) if share < 1}
        assert set(record["oracle_at"]) == dropping
        assert all(0 <= f1 <= 100 for f1 in record["oracle_at"].values())
    assert {r["full"] for r in records} == {qa.evaluate(examples).f1}
    printed = capsys.readouterr().out
    assert "| oracle gap |" in printed
    assert "| oracle at every layer |" in printed


def test_a_state_path_that_is_a_folder_is_refused_before_the_search_and_kept(tiny_model, tmp_path, capsys):
    folder, victim = tmp_path / "model", tmp_path / "notes"
    shutil.copytree(tiny_model, folder)
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    assert (
        main(["search", "--model", str(folder), "--data", str(HELDOUT), *SMALL, "--state", str(victim)]) == 1
    )
    assert (victim / "keep.txt").read_text() == "mine" and not (folder / "frontier.json").exists()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert (
        last
        == f"dynamic-tinybert search: error: {victim}: is a folder, where a file is to be written; "
        + ("give a file path")
    )
    assert "Traceback" not in err


def test_held_out_questions_without_answers_are_refused_by_id_before_the_search(tiny_model, tmp_path, capsys):
    document = json.loads(HELDOUT.read_text())
    document["data"] = document["data"][:1]
    question = document["data"][0]["paragraphs"][0]["qas"][0]
    question["answers"] = []
    data = tmp_path / "unanswerable.json"
    data.write_text(json.dumps(document))
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    assert main(["search", "--model", str(folder), "--data", str(data), *SMALL]) == 2
    assert f"question {question['id']!r} has no gold answers" in capsys.readouterr().err
