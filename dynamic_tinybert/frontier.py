"""The accuracy/cost frontier of a model's length configurations, stored beside its config.json.

`frontier.json` holds the Pareto-optimal configurations the search found (docs/method.md, "The search"),
cheapest first, always ending with the full model, each with its cost and held-out accuracy, and
the selector they were searched with (their accuracy and cost hold for that one only):

    {"objective": "flops", "selector": "learned", "heldout": {...}, "machine": "...",
     "points": [{"lengths": [0.6, 0.4, ...], "flops_ratio": 0.31, "gflops_at_384": 5.4,
                 "gflops_at_mean_length": 2.1, "heldout_exact_match": 71.2, "heldout_f1": 80.3,
                 "latency_ms_batch1": 9.8, "throughput_batch32": 120.4}, ...]}

A budget picks the most accurate point that fits: `pick(budget=0.5)` (at most half the full
model's FLOPs) or `pick(speedup=2)` (at least twice the full model's measured throughput).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ModelConfig
from .files import atomic_write
from .lengths import Lengths, encoder_macs, validate_lengths

FILENAME = "frontier.json"
# window lengths over which a configuration's FLOPs ratio is taken (its largest): a budget met
# at every length is met by any mix of windows
RATIO_LENGTHS = range(32, 385, 16)


class BudgetError(ValueError):
    """A budget that no frontier point meets, or a model without a frontier."""


@dataclass
class Point:
    lengths: tuple[float, ...]  # one share per layer; all ones for the full model
    flops_ratio: float  # FLOPs against the full model, the largest over window lengths 32..384
    gflops_at_384: float
    gflops_at_mean_length: float  # at the held-out split's mean window length
    heldout_exact_match: float
    heldout_f1: float
    latency_ms_batch1: float | None = None  # measured on the machine the search ran on
    throughput_batch32: float | None = None  # windows per second

    @property
    def is_full(self) -> bool:
        return all(s == 1.0 for s in self.lengths)

    @property
    def config(self) -> Lengths | None:
        """The lengths in the form the model takes (None for the full model)."""
        return validate_lengths(self.lengths, len(self.lengths))

    def to_dict(self) -> dict:
        return asdict(self) | {"lengths": list(self.lengths)}


def flops_ratio(config: ModelConfig, lengths: Lengths | None, scorer_macs: int = 0) -> float:
    """FLOPs of a configuration (with its selector's, scorer_macs per token scored) against the
    full model's, the largest over window lengths.

    >>> flops_ratio(ModelConfig(num_hidden_layers=2), None)
    1.0
    """
    return max(encoder_macs(config, n, lengths, scorer_macs) / encoder_macs(config, n) for n in RATIO_LENGTHS)


@dataclass
class Frontier:
    points: list[Point]  # cheapest first; the last is the full model
    objective: str = "flops"
    heldout: dict = field(default_factory=dict)  # what the accuracy was measured on
    machine: str = ""  # where latency and throughput were measured
    constant_ratio: list[Point] = field(default_factory=list)  # every layer keeps one share: for comparison
    selector: str = "attention"  # which tokens dropping layers keep (model.SELECTORS)

    @property
    def full(self) -> Point:
        return self.points[-1]

    def pick(self, budget: float | None = None, speedup: float | None = None) -> Point:
        """The most accurate point within a FLOPs budget (share of the full model's, 0 < B <= 1)
        or with at least a measured speedup over the full model (S >= 1); ties go to the cheaper."""
        if (budget is None) == (speedup is None):
            raise BudgetError("give a budget or a speedup, not both")
        if budget is not None:
            if not 0 < budget <= 1 or math.isnan(budget):
                raise BudgetError(
                    f"budget {budget} is outside (0, 1]: it is the share of the full model's FLOPs"
                )
            fits = [p for p in self.points if p.flops_ratio <= budget + 1e-9]
            cheapest = f"{self.points[0].flops_ratio:.3f} of the full model's FLOPs"
            wanted = f"budget {budget}"
        else:
            if not speedup >= 1:
                raise BudgetError(f"speedup {speedup} is below 1")
            fits = [p for p in self.points if self._speedup(p) >= speedup - 1e-9]
            cheapest = f"a speedup of {max(self._speedup(p) for p in self.points):.2f}"
            wanted = f"speedup {speedup}"
        if not fits:
            raise BudgetError(f"{wanted} is beyond the cheapest frontier point ({cheapest})")
        return max(fits, key=lambda p: (p.heldout_f1, -p.flops_ratio))

    def _speedup(self, point: Point) -> float:
        """Measured throughput against the full model's; FLOPs where nothing was measured."""
        if point.throughput_batch32 and self.full.throughput_batch32:
            return point.throughput_batch32 / self.full.throughput_batch32
        return 1.0 / point.flops_ratio

    def to_dict(self) -> dict:
        return {
            "objective": self.objective,
            "selector": self.selector,
            "heldout": self.heldout,
            "machine": self.machine,
            "points": [p.to_dict() for p in self.points],
            "constant_ratio": [p.to_dict() for p in self.constant_ratio],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> Frontier:
        def points(key: str) -> list[Point]:
            return [Point(**(p | {"lengths": tuple(p["lengths"])})) for p in raw.get(key, [])]

        frontier = cls(
            points("points"),
            raw.get("objective", "flops"),
            raw.get("heldout", {}),
            raw.get("machine", ""),
            points("constant_ratio"),
            raw.get("selector", "attention"),  # files from before the learned selector
        )
        if not frontier.points or not frontier.full.is_full:
            raise ValueError("the points must end with the full model")
        return frontier

    def save(self, folder: str | Path) -> Path:
        """Write frontier.json into the model folder (atomically)."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        return atomic_write(Path(folder) / FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, folder: str | Path) -> Frontier | None:
        """The model folder's frontier, or None when it has none."""
        path = Path(folder) / FILENAME
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as error:
            raise BudgetError(f"{path} is not a valid frontier file: {error}") from None


def pareto(
    points: Sequence[Point], full: Point, cost: Callable[[Point], float] = lambda p: p.flops_ratio
) -> list[Point]:
    """The points no other point beats on both cost and F1, cheapest first, ending with the full
    model; `cost` is FLOPs by default. A configuration measured as more accurate than the full
    model is left out: dropping
    tokens removes information, so such a gain on a held-out split is noise, and the frontier
    keeps the full model as its most accurate point.

    >>> full = Point((1.0, 1.0), 1.0, 2.0, 1.0, 80.0, 88.0)
    >>> a, b = Point((0.5, 0.5), 0.5, 1.0, 0.5, 70.0, 80.0), Point((0.6, 0.5), 0.6, 1.2, 0.6, 60.0, 75.0)
    >>> [p.flops_ratio for p in pareto([a, b], full)]
    [0.5, 1.0]
    """
    candidates = sorted(
        (p for p in points if not p.is_full and p.heldout_f1 <= full.heldout_f1),
        key=lambda p: (cost(p), -p.heldout_f1),
    )
    frontier: list[Point] = []
    for point in candidates:
        if cost(point) >= cost(full):
            continue
        if not frontier or point.heldout_f1 > frontier[-1].heldout_f1:
            frontier.append(point)
    return frontier + [full]
