"""The accuracy/cost frontier of a model's length configurations, stored beside its config.json.

`frontier.json` holds the Pareto-optimal configurations the search found (docs/method.md, "The search"),
cheapest first, always ending with the full model, each with its cost and held-out accuracy, and
the selector they were searched with (their accuracy and cost hold for that one only):

    {"objective": "flops", "selector": "learned", "heldout": {...}, "machine": "...",
     "dtype": "fp32", "default_dtype": "bf16",
     "points": [{"lengths": [0.6, 0.4, ...], "flops_ratio": 0.31, "gflops_at_384": 5.4,
                 "gflops_at_mean_length": 2.1, "heldout_exact_match": 71.2, "heldout_f1": 80.3,
                 "latency_ms_batch1": 9.8, "throughput_batch32": 120.4,
                 "by_dtype": {"bf16": {"heldout_exact_match": 71.0, "heldout_f1": 80.2,
                                       "latency_ms_batch1": 4.1, "throughput_batch32": 301.2}}}, ...]}

A point's own accuracy and speed were measured in `dtype`, the precision the search ran in;
`by_dtype` holds the same measurements in other precisions (`search --measure-dtypes`), and
`default_dtype` the precision the model runs in when none is asked for (DEFAULT_DTYPE_RULE).
A budget picks the most accurate point that fits, in the precision in use: `pick(budget=0.5)`
(at most half the full model's FLOPs) or `pick(speedup=2)` (at least twice the full model's
throughput measured in that precision).

`margin_points` (`search --margins`) are margin configurations (docs/selector.md, "Margins"):
each window keeps as many tokens as its selector scores call for, so their FLOPs ratio is the
mean the held-out windows kept, not a bound per window as a share's is. Budgets pick among them
too, unless told not to (`pick(..., margins=False)`):

     "margin_points": [{"lengths": [1, 1, ...], "margins": [3, 3, ...], "flops_ratio": 0.48,
                        "gflops_at_384": null, "gflops_at_mean_length": 1.9, ...}]
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import ModelConfig
from .files import atomic_write
from .lengths import (
    Lengths,
    Margins,
    encoder_macs,
    format_lengths,
    format_margins,
    is_number,
    margins_from_json,
    margins_to_json,
    validate_lengths,
)
from .precision import DTYPES

FILENAME = "frontier.json"
# window lengths over which a configuration's FLOPs ratio is taken (its largest): a budget met
# at every length is met by any mix of windows
RATIO_LENGTHS = range(32, 385, 16)


# a precision other than fp32 becomes a model's default when it is the fastest at full length
# among those that lose at most this much held-out F1 against fp32
DEFAULT_DTYPE_RULE = 0.2


class BudgetError(ValueError):
    """A budget that no frontier point meets, or a model without a frontier."""


@dataclass
class Measured:
    """A configuration run in one precision: held-out accuracy, and speed on the frontier's machine."""

    heldout_exact_match: float
    heldout_f1: float
    latency_ms_batch1: float
    throughput_batch32: float  # windows per second


@dataclass
class Point:
    lengths: tuple[float, ...]  # one share per layer; all ones for the full model and margin points
    # FLOPs against the full model: the largest over window lengths 32..384 for shares, the mean
    # over the held-out windows for margins
    flops_ratio: float
    gflops_at_384: float | None  # None for margins: what a window keeps depends on its text
    # at the held-out split's mean window length (margins: flops_ratio times the full model's)
    gflops_at_mean_length: float
    heldout_exact_match: float
    heldout_f1: float
    latency_ms_batch1: float | None = None  # measured on the machine the search ran on
    throughput_batch32: float | None = None  # windows per second
    by_dtype: dict[str, Measured] = field(default_factory=dict)  # in precisions besides the frontier's
    margins: Margins | None = None  # a margin point: per layer margin (inf: the layer keeps all)
    # scored on other questions than the search's (search --confirm; Frontier.heldout["confirmed"])
    confirmed_exact_match: float | None = None
    confirmed_f1: float | None = None

    @property
    def is_full(self) -> bool:
        return self.margins is None and all(s == 1.0 for s in self.lengths)

    @property
    def config(self) -> Lengths | None:
        """The lengths in the form the model takes (None for the full model and margin points)."""
        return validate_lengths(self.lengths, len(self.lengths))

    @property
    def label(self) -> str:
        """How reports name it: its shares, or "margins 3,3,..."."""
        if self.margins is not None:
            return f"margins {format_margins(self.margins, len(self.margins))}"
        return format_lengths(self.config, len(self.lengths))

    def to_dict(self) -> dict:
        out = asdict(self) | {"lengths": list(self.lengths)}
        if not self.by_dtype:
            del out["by_dtype"]
        if self.margins is None:
            del out["margins"]
        else:
            out["margins"] = margins_to_json(self.margins)
        for name in ("confirmed_exact_match", "confirmed_f1"):
            if out[name] is None:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Point:
        _check_numbers(raw, ("flops_ratio", "gflops_at_mean_length", "heldout_exact_match", "heldout_f1"))
        timed = ("gflops_at_384", "latency_ms_batch1", "throughput_batch32")
        _check_numbers(raw, (*timed, "confirmed_exact_match", "confirmed_f1"), optional=True)
        if not (isinstance(raw["lengths"], list) and all(map(is_number, raw["lengths"]))):
            raise ValueError(f"lengths must be a list of numbers, got {raw['lengths']!r:.80}")
        for measured in raw.get("by_dtype", {}).values():
            _check_numbers(measured, [f.name for f in fields(Measured)])
        by_dtype = {d: Measured(**m) for d, m in raw.get("by_dtype", {}).items()}
        margins = margins_from_json(raw.get("margins"))
        return cls(**(raw | {"lengths": tuple(raw["lengths"]), "by_dtype": by_dtype, "margins": margins}))


def _check_numbers(raw: dict, names: Sequence[str], optional: bool = False) -> None:
    """A hand-edited frontier file gets a message naming the field, not a wrong plot or a crash."""
    for name in names:
        value = raw.get(name)
        if not (is_number(value) or (optional and value is None)):
            raise ValueError(f"{name} must be a number{' or null' if optional else ''}, got {value!r:.80}")


def flops_ratio(config: ModelConfig, lengths: Lengths | None, scorer_macs: int = 0) -> float:
    """FLOPs of a configuration (with its selector's, scorer_macs per token scored) against the
    full model's, the largest over window lengths.

    >>> flops_ratio(ModelConfig(num_hidden_layers=2), None)
    1.0
    """
    return max(encoder_macs(config, n, lengths, scorer_macs) / encoder_macs(config, n) for n in RATIO_LENGTHS)


def check_budget(budget: float) -> None:
    """A budget is a share of the full model's FLOPs, in (0, 1]."""
    if not 0 < budget <= 1 or math.isnan(budget):
        raise BudgetError(f"budget {budget} is outside (0, 1]: it is the share of the full model's FLOPs")


def parse_budgets(text: str, option: str = "--budgets") -> list[float]:
    """The command-line form "b1,b2,...", each budget checked.

    >>> parse_budgets("1,0.5")
    [1.0, 0.5]
    """
    try:
        budgets = [float(part) for part in text.split(",")]
    except ValueError:
        raise BudgetError(f"{option} {text!r} is not a comma-separated list of numbers, e.g. 1,0.5") from None
    for budget in budgets:
        try:
            check_budget(budget)
        except BudgetError as error:
            raise BudgetError(f"{option}: {error}") from None
    return budgets


@dataclass
class Frontier:
    points: list[Point]  # cheapest first; the last is the full model
    objective: str = "flops"
    heldout: dict = field(default_factory=dict)  # what the accuracy was measured on
    machine: str = ""  # where latency and throughput were measured
    constant_ratio: list[Point] = field(default_factory=list)  # every layer keeps one share: for comparison
    selector: str = "attention"  # which tokens dropping layers keep (model.SELECTORS)
    dtype: str = "fp32"  # the precision the search ran in: the points' own accuracy and speed
    default_dtype: str = "fp32"  # the precision the model runs in when none is asked for
    margin_points: list[Point] = field(default_factory=list)  # cheapest first, none of them full

    @property
    def full(self) -> Point:
        return self.points[-1]

    def measured(self, point: Point, dtype: str | None = None) -> Measured | None:
        """The point's accuracy and speed in a precision (default: the frontier's), if measured."""
        if dtype is not None and dtype != self.dtype:
            return point.by_dtype.get(dtype)
        if point.latency_ms_batch1 is None or point.throughput_batch32 is None:
            return None
        return Measured(
            point.heldout_exact_match, point.heldout_f1, point.latency_ms_batch1, point.throughput_batch32
        )

    @property
    def dtypes(self) -> list[str]:
        """The precisions whose accuracy and speed were measured at full length."""
        return [self.dtype, *self.full.by_dtype] if self.measured(self.full) else list(self.full.by_dtype)

    def fastest_close_to_fp32(self) -> str:
        """The default precision the measurements call for: the fastest at full length (batch 32)
        among those within DEFAULT_DTYPE_RULE held-out F1 of fp32; fp32 when nothing else was
        measured (the search's precision when fp32 was not measured).

        >>> full = Point((1.0,), 1.0, 1.0, 1.0, 80.0, 88.0, 20.0, 100.0)
        >>> full.by_dtype = {"bf16": Measured(79.9, 87.9, 8.0, 250.0), "int8": Measured(79, 87, 9, 280)}
        >>> Frontier([full]).fastest_close_to_fp32()
        'bf16'
        """
        reference = self.measured(self.full, "fp32")
        if reference is None:
            return self.dtype
        close = {
            dtype: measured.throughput_batch32
            for dtype in self.dtypes
            if (measured := self.measured(self.full, dtype)).heldout_f1
            >= reference.heldout_f1 - DEFAULT_DTYPE_RULE
        }
        return max(close, key=close.get)

    def candidates(self, margins: bool = True) -> list[Point]:
        """The points a budget picks from: the shares' frontier, and the margin points unless
        `margins` is False."""
        return [*self.margin_points, *self.points] if margins else list(self.points)

    def ladder(self, dtype: str | None = None) -> list[Point]:
        """The shares and the margin points in one frontier, fastest first, ending with the full
        model: each point more accurate than every faster one, by the throughput measured in
        `dtype` (FLOPs where it was not measured). The server's SLO mode moves along it: margins
        save less time per FLOP than shares, so by time some of them fall out."""
        points = self.candidates(margins=True)
        try:
            speed = {id(p): self._speedup(p, dtype) for p in points}
        except BudgetError:
            return pareto(points, self.full)
        return pareto(points, self.full, cost=lambda p: 1 / speed[id(p)])

    def pick(
        self,
        budget: float | None = None,
        speedup: float | None = None,
        dtype: str | None = None,
        margins: bool = True,
        among: Sequence[Point] | None = None,
        cost: Callable[[Point], float] | None = None,
    ) -> Point:
        """The most accurate point within a FLOPs budget (share of the full model's, 0 < B <= 1;
        a margin point's FLOPs are its held-out mean) or with at least a measured speedup over
        the full model (S >= 1), by accuracy and speed in `dtype` (default: the frontier's) where
        measured; ties go to the full model, then to the cheaper. `margins`: whether margin
        points may be picked; `among`: these points instead (e.g. the ladder); `cost`: a point's
        share of the full model's FLOPs for the budget, instead of its flops_ratio (the
        reader's calibration measures margin points on other text)."""
        if (budget is None) == (speedup is None):
            raise BudgetError("give a budget or a speedup, not both")
        for name, value in (("budget", budget), ("speedup", speedup)):
            if value is not None and not is_number(value):
                raise BudgetError(f"{name} must be a number, got {value!r:.80}")
        points = self.candidates(margins) if among is None else list(among)
        if budget is not None:
            check_budget(budget)
            ratio = cost or (lambda p: p.flops_ratio)
            fits = [p for p in points if ratio(p) <= budget + 1e-9]
            cheapest = f"{min(ratio(p) for p in points):.3f} of the full model's FLOPs"
            wanted = f"budget {budget}"
        else:
            if not speedup >= 1:
                raise BudgetError(f"speedup {speedup} is below 1")
            fits = [p for p in points if self._speedup(p, dtype) >= speedup - 1e-9]
            cheapest = f"a speedup of {max(self._speedup(p, dtype) for p in points):.2f}"
            wanted = f"speedup {speedup}"
        if not fits:
            raise BudgetError(f"{wanted} is beyond the cheapest frontier point ({cheapest})")
        return max(fits, key=lambda p: (self._f1(p, dtype), p.is_full, -p.flops_ratio))

    def _f1(self, point: Point, dtype: str | None) -> float:
        """Held-out F1 in that precision, at most the full model's there: as in pareto(), a
        configuration that scores above full length does so by noise, and does not displace it.
        Where the frontier was confirmed (search --confirm), the confirmed F1 (confirmed_f1)."""
        confirmed = self.confirmed_f1(point, dtype)
        if confirmed is not None:
            return min(confirmed, self.confirmed_f1(self.full, dtype))
        measured, full = self.measured(point, dtype), self.measured(self.full, dtype)
        if measured is None or full is None:
            return point.heldout_f1
        return min(measured.heldout_f1, full.heldout_f1)

    def confirmed_f1(self, point: Point, dtype: str | None = None) -> float | None:
        """The point's F1 on the questions the frontier was confirmed on (search --confirm; None
        where it was not): the search's own favours the points it kept, each the best of many on
        its questions. In another precision it moves by what that precision changed on the
        search's questions; for a point added after the confirmation (not scored then), the
        search's F1 moved by what the full model's moved."""
        if self.full.confirmed_f1 is None:
            return None
        moved = self.full.confirmed_f1 - self.full.heldout_f1
        confirmed = point.confirmed_f1 if point.confirmed_f1 is not None else point.heldout_f1 + moved
        measured = self.measured(point, dtype)
        return confirmed if measured is None else confirmed + measured.heldout_f1 - point.heldout_f1

    def _speedup(self, point: Point, dtype: str | None = None) -> float:
        """Throughput measured in that precision against the full model's; FLOPs where the
        frontier's own precision has no timings (another precision without them is refused)."""
        own, full = self.measured(point, dtype), self.measured(self.full, dtype)
        if own and full:
            return own.throughput_batch32 / full.throughput_batch32
        if dtype is None or dtype == self.dtype:
            return 1.0 / point.flops_ratio
        raise BudgetError(
            f"the frontier has no {dtype} timings (it was measured in {', '.join(self.dtypes) or 'none'}): "
            f"a speedup would be read from another precision's. Measure them with `dynamic-tinybert "
            f"search --model M --data HELDOUT --measure-only --measure-dtypes {dtype}`, or give a --budget"
        )

    def to_dict(self) -> dict:
        return {
            "objective": self.objective,
            "selector": self.selector,
            "heldout": self.heldout,
            "machine": self.machine,
            "dtype": self.dtype,
            "default_dtype": self.default_dtype,
            "points": [p.to_dict() for p in self.points],
            "constant_ratio": [p.to_dict() for p in self.constant_ratio],
        } | ({"margin_points": [p.to_dict() for p in self.margin_points]} if self.margin_points else {})

    @classmethod
    def from_dict(cls, raw: dict) -> Frontier:
        if not isinstance(raw, dict):
            raise ValueError(f"it holds a JSON {type(raw).__name__}, not an object")

        def points(key: str) -> list[Point]:
            return [Point.from_dict(p) for p in raw.get(key, [])]

        frontier = cls(
            points("points"),
            raw.get("objective", "flops"),
            raw.get("heldout", {}),
            raw.get("machine", ""),
            points("constant_ratio"),
            raw.get("selector", "attention"),  # files from before the learned selector
            raw.get("dtype", "fp32"),  # files from before precisions: searched and run in fp32
            raw.get("default_dtype", "fp32"),
            points("margin_points"),
        )
        if not frontier.points or not frontier.full.is_full:
            raise ValueError("the points must end with the full model")
        if any(p.margins is not None for p in frontier.points) or any(
            p.margins is None for p in frontier.margin_points
        ):
            raise ValueError("margin configurations belong in margin_points, and only they")
        every = [*frontier.points, *frontier.margin_points]
        named = {frontier.dtype, frontier.default_dtype, *(d for p in every for d in p.by_dtype)}
        if not named <= set(DTYPES):
            raise ValueError(f"precisions {sorted(named - set(DTYPES))} are not among {', '.join(DTYPES)}")
        return frontier

    def save(self, folder: str | Path) -> Path:
        """Write frontier.json into the model folder (atomically)."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        return atomic_write(Path(folder) / FILENAME, lambda path: path.write_text(text))

    @classmethod
    def load(cls, folder: str | Path) -> Frontier | None:
        """The model folder's frontier, or None when it has none."""
        path = Path(folder) / FILENAME
        return cls.read(path) if path.is_file() else None

    @classmethod
    def read(cls, path: str | Path) -> Frontier:
        """A frontier file: a model's frontier.json, or one searched with other settings."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except OSError as error:
            raise BudgetError(f"{path}: cannot read the frontier file ({error.strerror})") from None
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
