"""Evolution of per-layer margins (docs/selector.md, "Margins"), beside the search of shares.

A constant margin lets every layer keep the context tokens the learned selector scores within
one distance of a window's best. Layers need not want the same one: measured on held-out
questions, a wide first margin and narrow later ones, (4, 3, 3, 2, 2, 2), kept more F1 than a
constant margin of the same FLOPs. So the search evolves margin configurations the way it evolves
shares: from constant margins, each iteration mutates and crosses the Pareto-optimal ones and
keeps the frontier of held-out F1 against FLOPs. A margin configuration's FLOPs are what its
held-out windows kept (a mean, not a bound).

Margins live on a grid (multiples of `step` up to `top`, then inf: the layer keeps every token),
so each configuration is evaluated once. The evaluations, the random generator and the
iteration are written after each evaluation: a stopped search resumes where it stopped, with no
evaluation lost.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .files import atomic_write, saved_state
from .frontier import Point, pareto
from .lengths import Margins, margins_from_json, margins_to_json

# --- the operators (pure) ------------------------------------------------------------------------


def margin_grid(step: float, top: float) -> list[float]:
    """The margins a layer may take: multiples of `step` up to `top`, then inf.

    >>> margin_grid(0.5, 2)
    [0.5, 1.0, 1.5, 2.0, inf]
    """
    return [round(k * step, 6) for k in range(1, math.floor(top / step + 1e-9) + 1)] + [math.inf]


def initial_margins(num_layers: int, size: int, grid: Sequence[float]) -> list[Margins]:
    """`size` constant margins spread over the grid's finite values, narrowest first.

    >>> initial_margins(2, 3, [0.5, 1.0, 1.5, 2.0, math.inf])
    [(0.5, 0.5), (1.5, 1.5), (2.0, 2.0)]
    """
    finite = grid[:-1]
    picks = np.linspace(0, len(finite) - 1, min(size, len(finite))).round().astype(int)
    return [(finite[i],) * num_layers for i in dict.fromkeys(picks.tolist())]


def mutate_margins(parent: Margins, rng: np.random.Generator, prob: float, grid: Sequence[float]) -> Margins:
    """Each layer, with probability prob, takes a random margin of the grid; the others keep theirs.

    >>> mutate_margins((3.0, 2.0), np.random.default_rng(0), 0.0, [1.0, 2.0, math.inf])
    (3.0, 2.0)
    """
    return tuple(grid[int(rng.integers(len(grid)))] if rng.random() < prob else m for m in parent)


def crossover_margins(a: Margins, b: Margins, grid: Sequence[float]) -> Margins:
    """The element-wise mean, rounded up to the grid; inf counts as one step beyond the grid's
    widest finite margin, and a mean beyond that margin is inf.

    >>> crossover_margins((3.0, 1.0, math.inf), (2.0, 1.5, 2.0), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, math.inf])
    (2.5, 1.5, 3.0)
    """
    finite = grid[:-1]
    beyond = finite[-1] + (finite[-1] - finite[-2] if len(finite) > 1 else finite[-1])

    def snapped(x: float, y: float) -> float:
        mean = (min(x, beyond) + min(y, beyond)) / 2
        return next((g for g in finite if g >= mean - 1e-9), math.inf)

    return tuple(snapped(x, y) for x, y in zip(a, b, strict=True))


def _key(margins: Margins) -> str:
    """How the state file names a configuration: "3,2.5,null"."""
    return ",".join(json.dumps(m) for m in margins_to_json(margins))


# --- the evolution -------------------------------------------------------------------------------


class MarginEvolution:
    """Margin configurations evaluated on a search's held-out windows, and the evolution over them.

    evaluate(margins) runs one configuration and returns its held-out Point (FLOPs measured);
    `key` is what a resumed evolution must share with the one it continues.
    """

    def __init__(
        self,
        evaluate: Callable[[Margins], Point],
        state_path: Path,
        key: dict,
        seed: int,
        quiet: bool = False,
    ):
        self._evaluate, self.state_path, self.key = evaluate, state_path, key
        self.seed, self.quiet = seed, quiet
        self._start()
        self._resume()

    def _start(self) -> None:
        self.rng = np.random.default_rng([self.seed, 2])
        self.restart_rng, self.restart_points = self.rng.bit_generator.state, 0  # as the search's
        self.points: dict[Margins, Point] = {}
        self.iteration = -1  # -1: the initial margins are not evaluated yet

    def point(self, margins: Margins) -> Point:
        """The configuration's held-out point, evaluated once (and saved with the state)."""
        if margins not in self.points:
            self.points[margins] = self._evaluate(margins)
            self._save()
        return self.points[margins]

    def run(
        self,
        full: Point,
        iterations: int,
        initial: Sequence[Margins],
        grid: Sequence[float],
        mutations: int,
        crossovers: int,
        prob: float,
    ) -> list[Point]:
        """Every configuration evaluated after `iterations` iterations from `initial`, each
        iteration mutating and crossing the Pareto-optimal ones (against `full`)."""
        bar = tqdm(
            total=iterations + 1,
            initial=self.iteration + 1,
            desc="margins",
            unit="iteration",
            disable=self.quiet,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        with bar:
            if self.iteration < 0:
                for margins in initial:
                    self.point(margins)
                self.iteration = 0
                self.restart_rng, self.restart_points = self.rng.bit_generator.state, len(self.points)
                self._save()
                bar.update(1)
            while self.iteration < iterations:
                parents = [
                    p.margins for p in pareto(list(self.points.values())[: self.restart_points], full)[:-1]
                ]
                if not parents:  # no margin configuration beats the full model's cost and F1
                    break
                children = [
                    mutate_margins(parents[self.rng.integers(len(parents))], self.rng, prob, grid)
                    for _ in range(mutations)
                ]
                for _ in range(crossovers):
                    a, b = self.rng.integers(len(parents), size=2)
                    children.append(crossover_margins(parents[a], parents[b], grid))
                for child in children:
                    if not all(math.isinf(m) for m in child):  # all inf is the full model
                        self.point(child)
                self.iteration += 1
                self.restart_rng, self.restart_points = self.rng.bit_generator.state, len(self.points)
                self._save()
                bar.update(1)
                bar.set_postfix(frontier=len(parents), evaluated=len(self.points))
        return list(self.points.values())

    def _save(self) -> None:
        state = {
            "settings": self.key,
            "iteration": self.iteration,
            "rng": self.restart_rng,
            "restart_points": self.restart_points,
            "points": {_key(m): p.to_dict() for m, p in self.points.items()},
        }
        atomic_write(self.state_path, lambda path: path.write_text(json.dumps(state)))

    def _resume(self) -> None:
        state = saved_state(self.state_path, self.key)
        if state is None:
            return
        self.iteration = state["iteration"]
        self.rng.bit_generator.state = self.restart_rng = state["rng"]
        self.points = {
            margins_from_json(json.loads(f"[{key}]")): Point.from_dict(raw)
            for key, raw in state["points"].items()
        }
        self.restart_points = state.get("restart_points", len(self.points))
