"""The evolution of per-layer margins beside the search of shares (margin_search.py)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np

from dynamic_tinybert.cli import main
from dynamic_tinybert.frontier import Frontier, Point
from dynamic_tinybert.lengths import geometric_lengths, margins_from_json
from dynamic_tinybert.margin_search import (
    MarginEvolution,
    crossover_margins,
    initial_margins,
    margin_grid,
    mutate_margins,
)

GRID = margin_grid(0.25, 6)
EVOLVE = ["--margin-iterations", "2", "--population", "4", "--mutations", "4", "--crossovers", "3"]
EVOLVE += ["--margin-step", "0.5", "--margin-top", "4", "--seed", "3", "--latency-windows", "2", "--quiet"]


def test_the_operators_stay_on_the_grid():
    rng = np.random.default_rng(0)
    assert GRID[0] == 0.25 and GRID[-2] == 6.0 and math.isinf(GRID[-1]) and len(GRID) == 25
    parents = initial_margins(6, 12, GRID)
    assert len(parents) == 12 and all(len(set(p)) == 1 and p[0] in GRID for p in parents)
    assert parents[0] == (0.25,) * 6 and parents[-1] == (6.0,) * 6
    children = [mutate_margins(parents[i % 12], rng, 0.5, GRID) for i in range(50)]
    children += [crossover_margins(a, b, GRID) for a, b in zip(children, reversed(children), strict=True)]
    assert all(len(c) == 6 and set(c) <= set(GRID) for c in children)
    assert any(len(set(c)) > 1 for c in children)  # layers come to differ
    assert crossover_margins((math.inf,) * 2, (math.inf,) * 2, GRID) == (math.inf,) * 2
    assert crossover_margins((6.0, 1.0), (math.inf, 1.0), GRID) == (math.inf, 1.0)  # 6.125 > 6


def _model_with_frontier(tiny_selector_model, folder, data) -> list[str]:
    """The tiny selector model with a frontier whose full model scores 100, so that the margin
    configurations cheaper than it, each better than the cheaper ones, stay; the command that
    evolves margins for it on `data`."""
    shutil.copytree(tiny_selector_model, folder)
    cheap = geometric_lengths(0.5, 4)
    full = Point((1.0,) * 4, 1.0, 0.0, 3.0, 90.0, 100.0, 10.0, 100.0)
    shares = [Point(cheap, 0.3, 0.0, 1.0, 0.0, 0.0, 5.0, 200.0), full]
    Frontier(shares, selector="learned", heldout={"questions": 2}).save(folder)
    return ["search", "--model", str(folder), "--data", str(data), "--measure-only", *EVOLVE]


def _essentials(frontier: Frontier) -> list[tuple]:
    return [(p.margins, p.flops_ratio, p.heldout_f1) for p in frontier.margin_points]


def test_evolved_margins_become_margin_points_and_a_stopped_evolution_resumes(
    tiny_selector_model, squad_file, tmp_path, monkeypatch
):
    command = _model_with_frontier(tiny_selector_model, tmp_path / "whole", squad_file)
    assert main(command) == 0
    whole = Frontier.load(tmp_path / "whole")
    state = json.loads((tmp_path / "whole" / "search_state.margins.json").read_text())
    assert state["iteration"] == 2 and len(state["points"]) > 4  # more than the initial margins
    assert any(len(set(json.loads(f"[{key}]"))) > 1 for key in state["points"])  # per-layer margins tried
    points = whole.margin_points
    assert points and all(p.margins is not None and p.latency_ms_batch1 > 0 for p in points)
    costs, f1s = [p.flops_ratio for p in points], [p.heldout_f1 for p in points]
    assert costs == sorted(set(costs)) and f1s == sorted(set(f1s))
    assert whole.heldout["margin_search"]["margin_iterations"] == 2

    # stopped inside the last iteration, before its last evaluation: none of the others is lost
    stopped = _model_with_frontier(tiny_selector_model, tmp_path / "stopped", squad_file)
    original, evaluated, stop_at = MarginEvolution.point, [], [len(state["points"]) - 1]

    def point(self, margins):
        if margins not in self.points:
            if len(self.points) in stop_at:
                raise KeyboardInterrupt
            evaluated.append(margins)
        return original(self, margins)

    monkeypatch.setattr(MarginEvolution, "point", point)
    assert main(stopped) == 130
    assert Frontier.load(tmp_path / "stopped").margin_points == []  # nothing written yet
    saved = json.loads((tmp_path / "stopped" / "search_state.margins.json").read_text())
    assert (saved["iteration"], len(saved["points"])) == (1, len(state["points"]) - 1)
    evaluated.clear()
    stop_at.clear()
    assert main(stopped) == 0
    assert _essentials(Frontier.load(tmp_path / "stopped")) == _essentials(whole)
    assert len(evaluated) == 1  # the one it had not made, and no other
    resumed = json.loads((tmp_path / "stopped" / "search_state.margins.json").read_text())
    assert resumed["points"].keys() == state["points"].keys()


def test_margin_settings_are_checked(tiny_selector_model, tiny_model, squad_file, tmp_path, capsys):
    command = _model_with_frontier(tiny_selector_model, tmp_path / "model", squad_file)
    for bad, message in (("--margin-step=0", "margin-step"), ("--margin-iterations=-1", "negative")):
        assert main([*command, bad]) == 2
        assert message in capsys.readouterr().err
    attention = ["search", "--model", str(tiny_model), "--data", str(squad_file), "--measure-only", *EVOLVE]
    assert main(attention) == 2
    assert "learned selector" in capsys.readouterr().err


def test_a_search_of_shares_evolves_margins_after_them(tiny_selector_model, squad_file, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_selector_model, folder)
    command = ["search", "--model", str(folder), "--data", str(squad_file), "--iterations", "0", *EVOLVE]
    assert main(command) == 0
    frontier = Frontier.load(folder)
    assert frontier.margin_points and frontier.points[-1].is_full
    state = json.loads((folder / "search_state.margins.json").read_text())
    assert state["iteration"] == 2
    evaluated = {margins_from_json(json.loads(f"[{key}]")) for key in state["points"]}
    assert {p.margins for p in frontier.margin_points} <= evaluated
