"""Evolutionary search of length configurations (docs/method.md, "The search"), as in the Length-Adaptive
Transformer: start from constant-ratio configurations spread between the smallest and the full
one; each iteration mutates and crosses frontier members and keeps the Pareto frontier of
held-out F1 against cost (FLOPs, or latency measured on this machine).

Configurations live on a grid of shares (multiples of `grid`, 0.05 by default), so that each is
evaluated once and the search is reproducible with a seed. The state (every evaluation, the
random generator and the iteration where the iteration in progress began) is written after each
evaluation: stopped and started again with the same command, a search continues where it stopped,
evaluating nothing twice, and ends with the same frontier.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .checkpoint import DEFAULT_MODEL
from .config import SELECTORS
from .data import check_answerable, read_squad, refuse_squad_dev, spread_sample
from .files import atomic_write, check_target, check_writable, saved_state
from .frontier import DEFAULT_DTYPE_RULE, Frontier, Measured, Point, flops_ratio, pareto
from .lengths import (
    LENGTHDROP_RATIO,
    Lengths,
    LengthsError,
    Margins,
    encoder_gflops,
    parse_margins,
    validate_lengths,
)
from .margin_search import MarginEvolution, initial_margins, margin_grid
from .model import DynamicBertForQuestionAnswering
from .options import option
from .precision import DTYPES
from .reader import QuestionAnswerer
from .timing import latency_ms, machine, throughput

Units = tuple[int, ...]  # a configuration in grid steps: share of layer i = units[i] * grid


class SearchError(ValueError):
    """Settings or data a search cannot run with."""


@dataclass
class SearchSettings:
    """Every setting of `dynamic-tinybert search`; the command line is built from these fields."""

    model: str = option("the model folder; its frontier.json is written there", required=True)
    data: list[str] = option(
        "held-out SQuAD-format file(s) to select on (never SQuAD dev)", nargs="+", required=True
    )
    objective: str = option(
        "cost to trade F1 against: flops, or latency measured here",
        default="flops",
        choices=("flops", "latency"),
    )
    selector: str | None = option(
        "which tokens dropping layers keep: attention or learned (default: learned where the model has one)",
        choices=SELECTORS,
    )
    population: int = option("initial constant-ratio configurations", default=20)
    iterations: int = option("evolution iterations", default=30)
    mutations: int = option("mutations per iteration", default=30)
    crossovers: int = option("crossovers per iteration", default=30)
    mutation_prob: float = option("chance that a mutation changes a layer", default=0.5)
    limit: int | None = option("only the first N questions of the data")
    sample: int | None = option(
        "N questions drawn over all of the data (seeded by --seed), in their order: a sample of every "
        "file, where --limit takes the first file's (a held-out split lists its files one after another)"
    )
    seed: int = option("seed of the search", default=0)
    grid: float = option("step of the per-layer shares", default=0.05)
    smallest: float = option(
        "the smallest initial configuration keeps this share of the previous layer's tokens "
        "in each layer (LengthDrop's smallest)",
        default=LENGTHDROP_RATIO,
    )
    dtype: str = option("precision the search runs and times in", default="fp32", choices=DTYPES)
    measure_dtypes: tuple[str, ...] = option(
        "also measure the frontier's points in these precisions (held-out accuracy on the same "
        "questions, latency, throughput): --speedup picks by the precision in use, and the fastest "
        f"within {DEFAULT_DTYPE_RULE} held-out F1 of fp32 becomes the model's default precision",
        default=(),
        nargs="+",
        choices=DTYPES,
    )
    margins: tuple[str, ...] = option(
        "margin configurations to run beside the shares ('3' for every layer, or one per layer, "
        "'inf' keeping all): the Pareto-optimal ones go into frontier.json as margin points, which "
        "budgets pick from too; a margin point's FLOPs are the mean the held-out windows kept "
        "(needs the learned selector)",
        default=(),
        nargs="+",
    )
    margin_iterations: int = option(
        "evolve per-layer margins for this many iterations (--mutations and --crossovers each), from "
        "--population constant margins and --margins: the Pareto-optimal configurations become margin "
        "points (needs the learned selector; 0: only the --margins given)",
        default=0,
    )
    margin_step: float = option("step of the evolved margins", default=0.25)
    margin_top: float = option("the widest finite margin the evolution tries (beyond it: inf)", default=6.0)
    measure_only: bool = option(
        "no search: measure the points of the model's frontier.json in --measure-dtypes (its own "
        "precision among them: timed again), and add the --margins asked for",
        default=False,
    )
    confirm: bool = option(
        "no search: score every point of the model's frontier.json (shares and margin points) on the "
        "questions of --data, which the search did not choose them on, and let budgets pick by that "
        "F1: the search's own favours the points it kept, each the best of many on its questions",
        default=False,
    )
    batch_size: int = option("windows per forward pass", default=32)
    latency_windows: int = option("windows timed one at a time for a latency", default=32)
    state: str | None = option("state file to resume from (default: search_state.json in the model folder)")
    json: bool = option("print the frontier as a JSON list on stdout", default=False)
    quiet: bool = option("no progress bar", default=False)
    force: bool = option("write frontier.json into the model that ships with the package", default=False)

    def check(self) -> None:
        for name in ("population", "iterations", "mutations", "crossovers", "batch_size", "latency_windows"):
            if getattr(self, name) < (0 if name in ("iterations", "mutations", "crossovers") else 1):
                raise SearchError(f"--{name.replace('_', '-')} is too small: {getattr(self, name)}")
        if not 0 <= self.mutation_prob <= 1:
            raise SearchError("--mutation-prob must be between 0 and 1")
        if not 0 < self.grid <= 0.5 or abs(round(1 / self.grid) * self.grid - 1) > 1e-9:
            raise SearchError("--grid must divide 1 into equal steps, e.g. 0.05 or 0.1")
        for name in ("limit", "sample"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SearchError(f"--{name} must be at least 1")
        if self.limit is not None and self.sample is not None:
            raise SearchError(
                "--limit takes the first questions and --sample draws them over the data: give one"
            )
        if self.seed < 0:
            raise SearchError(f"--seed must be 0 or more, got {self.seed}")
        if not 0 < self.smallest <= 1:
            raise SearchError(
                f"--smallest is a share of the previous layer's tokens, in (0, 1]: got {self.smallest}"
            )
        if self.margin_iterations < 0:
            raise SearchError(f"--margin-iterations is negative: {self.margin_iterations}")
        if not 0 < self.margin_step <= self.margin_top:
            raise SearchError("--margin-step must be above 0 and no wider than --margin-top")
        measuring = self.measure_only or self.measure_dtypes or self.margins or self.margin_iterations
        if self.confirm and measuring:
            raise SearchError(
                "--confirm scores the frontier on other questions and runs alone: measure precisions "
                "and margins with --measure-only on the questions the frontier was searched on"
            )
        if self.measure_only and not (self.measure_dtypes or self.margins or self.margin_iterations):
            raise SearchError(
                "--measure-only needs --measure-dtypes (the precisions to measure the frontier in), "
                "--margins or --margin-iterations (margin points to add)"
            )

    def key(self) -> dict:
        """What a resumed search must share with the one it continues (the iterations may grow:
        a finished search goes on for more, as one run of that many iterations would)."""
        keep = (
            "data",
            "selector",
            "objective",
            "population",
            "mutations",
            "crossovers",
            "mutation_prob",
            "limit",
            "seed",
            "grid",
            "smallest",
        )
        key = {k: getattr(self, k) for k in keep}
        if self.dtype != "fp32":  # states from before precisions continue
            key["dtype"] = self.dtype
        if self.sample is not None:  # and those from before --sample
            key["sample"] = self.sample
        return key


# --- the operators (pure) ------------------------------------------------------------------------


def constant_ratios(num_layers: int, size: int, steps: int, smallest: float) -> list[Units]:
    """`size` constant-ratio configurations from the smallest one's last share up to the full model.

    >>> constant_ratios(2, 3, 10, 0.5)
    [(3, 3), (7, 7), (10, 10)]
    """
    low = smallest**num_layers
    shares = np.linspace(low, 1.0, size) if size > 1 else [1.0]
    return list(dict.fromkeys((max(1, math.ceil(s * steps - 1e-9)),) * num_layers for s in shares))


def whole_prefixes(constant: list[Units], steps: int, rungs: int = 3) -> list[Units]:
    """Configurations that keep the first k layers whole (k = 1 .. L-1) and the others at one
    share, for `rungs` shares spread over the constant ratios' (smallest first): the corner of
    the space between the constant ratios and the full model, which mutations rarely reach.

    >>> whole_prefixes([(2, 2, 2), (5, 5, 5), (10, 10, 10)], 10, rungs=2)
    [(10, 2, 2), (10, 10, 2), (10, 5, 5), (10, 10, 5)]
    """
    shares = sorted({c[0] for c in constant if c[0] < steps})
    if not shares:
        return []
    picked = dict.fromkeys(shares[round(j * (len(shares) - 1) / max(1, rungs - 1))] for j in range(rungs))
    layers = len(constant[0])
    return [(steps,) * k + (s,) * (layers - k) for s in picked for k in range(1, layers)]


def initial_population(num_layers: int, size: int, steps: int, smallest: float) -> list[Units]:
    """The constant ratios, then the whole-prefix configurations built on them.

    >>> initial_population(2, 3, 10, 0.5)
    [(3, 3), (7, 7), (10, 10), (10, 3), (10, 7)]
    """
    constant = constant_ratios(num_layers, size, steps, smallest)
    return list(dict.fromkeys(constant + whole_prefixes(constant, steps)))


def mutate(parent: Units, rng: np.random.Generator, prob: float, steps: int) -> Units:
    """Each layer, with probability prob, takes a random share (1..steps grid steps) no larger
    than the previous layer's; the others keep theirs, lowered where needed to stay
    non-increasing.

    >>> mutate((10, 8, 6), np.random.default_rng(0), 0.0, 10)
    (10, 8, 6)
    """
    child, upper = [], steps
    for units in parent:
        value = int(rng.integers(1, upper + 1)) if rng.random() < prob else min(units, upper)
        child.append(value)
        upper = value
    return tuple(child)


def crossover(a: Units, b: Units) -> Units:
    """The element-wise mean, rounded up (still non-increasing).

    >>> crossover((10, 8, 5), (9, 6, 2))
    (10, 7, 4)
    """
    return tuple(math.ceil((x + y) / 2) for x, y in zip(a, b, strict=True))


# --- the search ----------------------------------------------------------------------------------


class Search:
    def __init__(self, qa: QuestionAnswerer, settings: SearchSettings):
        self.qa, self.settings = qa, settings
        self.steps = round(1 / settings.grid)
        self.layers = qa.num_layers
        examples = []
        for source in settings.data:
            found = read_squad(source)
            refuse_squad_dev(found, source)
            check_answerable(found, source)
            examples += found
        if settings.sample:
            examples = spread_sample(examples, settings.sample, settings.seed)
        self.examples = examples[: settings.limit] if settings.limit else examples
        self.windows = qa.tokenizer.encode_examples(self.examples)
        self.flat = [w for ws in self.windows for w in ws]
        rng = np.random.default_rng(settings.seed)
        self.timed = [
            self.flat[i]
            for i in sorted(
                rng.choice(len(self.flat), min(len(self.flat), settings.latency_windows), replace=False)
            )
        ]
        self.mean_length = float(np.mean([len(w) for w in self.flat]))
        self.rng = np.random.default_rng([settings.seed, 1])
        # where the iteration in progress began, as saved: the generator and how many evaluations
        # there were (its parents come from those alone), so that a search stopped inside an
        # iteration draws the same children again, and finds those it evaluated in its state
        self.restart_rng, self.restart_evaluated = self.rng.bit_generator.state, 0
        self.evaluated: dict[Units, dict] = {}  # measurements (search_state.json keys them "20,16,...")
        self.measured: dict[str, dict[Units, dict]] = {}  # in other precisions: dtype -> units -> Measured
        self.iteration = -1  # -1: the initial population is not evaluated yet
        self.state_path = Path(settings.state) if settings.state else qa.folder / "search_state.json"
        self.selector = qa.resolve_selector(settings.selector)  # "learned" or "attention"
        self._models: dict[str, QuestionAnswerer] = {qa.dtype: qa}
        self.scorer_macs = qa.scorer_macs(self.selector)
        self.margins = self._parse_margins(settings.margins)

    def _parse_margins(self, texts: tuple[str, ...]) -> list[Margins]:
        if (texts or self.settings.margin_iterations) and self.selector != "learned":
            raise SearchError("margins compare the learned selector's scores: the model has none")
        margins = []
        for text in texts:
            try:
                parsed = parse_margins(text, self.layers)
            except LengthsError as error:
                raise SearchError(str(error)) from None
            if parsed is None:
                raise SearchError(f"--margins {text} keeps every token: that is the full model")
            margins.append(parsed)
        return list(dict.fromkeys(margins))

    def shares(self, units: Units) -> tuple[float, ...]:
        return tuple(round(u / self.steps, 6) for u in units)

    def lengths(self, units: Units) -> Lengths | None:
        """The configuration in the form the model takes: the search's one conversion of units."""
        return validate_lengths(self.shares(units), self.layers)

    def evaluate(self, units: Units) -> dict:
        """F1, EM and cost of one configuration, computed once."""
        if units not in self.evaluated:
            lengths = self.lengths(units)
            result = self._evaluate(self.qa, lengths)
            record = {"exact_match": result.exact_match, "f1": result.f1}
            if self.settings.objective == "latency":
                record["latency_ms"] = self._latency(lengths)
            self.evaluated[units] = record
            self._save()  # a stopped search loses no evaluation
        return self.evaluated[units]

    def point(self, units: Units) -> Point:
        record = self.evaluate(units)
        lengths = self.lengths(units)
        config = self.qa.model.config
        return Point(
            lengths=self.shares(units),
            flops_ratio=flops_ratio(config, lengths, self.scorer_macs),
            gflops_at_384=encoder_gflops(config, 384, lengths, self.scorer_macs),
            gflops_at_mean_length=encoder_gflops(config, round(self.mean_length), lengths, self.scorer_macs),
            heldout_exact_match=record["exact_match"],
            heldout_f1=record["f1"],
            latency_ms_batch1=record.get("latency_ms"),
            throughput_batch32=record.get("throughput"),
        )

    def _evaluate(self, qa: QuestionAnswerer, lengths: Lengths | None, margins: Margins | None = None):
        """Held-out EM and F1 of one configuration (reader.Evaluation) in qa's precision."""
        return qa.evaluate_windows(
            self.examples,
            self.windows,
            lengths,
            self.settings.batch_size,
            selector=self.selector,
            margins=margins,
        )

    def _latency(self, lengths, qa: QuestionAnswerer | None = None, margins: Margins | None = None) -> float:
        """Milliseconds of one window at a time, in qa's precision (default: the search's)."""
        qa = qa or self.qa
        return latency_ms(qa.model, self.timed, lengths, qa.device, selector=self.selector, margins=margins)

    def _throughput(
        self, lengths, qa: QuestionAnswerer | None = None, margins: Margins | None = None
    ) -> float:
        """Windows a second in batches, in qa's precision (default: the search's)."""
        qa = qa or self.qa
        return throughput(
            qa.model, self.flat[:256], lengths, qa.device, selector=self.selector, margins=margins
        )

    def _cost(self, point: Point) -> float:
        return point.latency_ms_batch1 if self.settings.objective == "latency" else point.flops_ratio

    def frontier_units(self, among: int | None = None) -> list[Units]:
        """The Pareto-optimal configurations among the first `among` evaluated (default: all)."""
        full = (self.steps,) * self.layers
        points = {units: self.point(units) for units in list(self.evaluated)[:among]}
        best = pareto(list(points.values()), points[full], cost=self._cost)
        chosen = {id(p) for p in best}
        return [u for u, p in sorted(points.items(), key=lambda item: self._cost(item[1])) if id(p) in chosen]

    @staticmethod
    def _units_of(key: str) -> Units:
        return tuple(int(x) for x in key.split(","))

    def run(self) -> Frontier:
        self._resume()
        full = (self.steps,) * self.layers
        population = initial_population(
            self.layers, self.settings.population, self.steps, self.settings.smallest
        )
        constant = [units for units in population if len(set(units)) == 1]
        bar = tqdm(
            total=self.settings.iterations + 1,
            initial=self.iteration + 1,
            unit="iteration",
            disable=self.settings.quiet,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        with bar:
            if self.iteration < 0:
                for units in [full, *population]:
                    self.evaluate(units)
                self.iteration = 0
                self.restart_rng, self.restart_evaluated = self.rng.bit_generator.state, len(self.evaluated)
                self._save()
                bar.update(1)
            while self.iteration < self.settings.iterations:
                parents = self.frontier_units(self.restart_evaluated)
                children = [
                    mutate(
                        parents[self.rng.integers(len(parents))],
                        self.rng,
                        self.settings.mutation_prob,
                        self.steps,
                    )
                    for _ in range(self.settings.mutations)
                ]
                for _ in range(self.settings.crossovers):
                    a, b = self.rng.integers(len(parents), size=2)
                    children.append(crossover(parents[a], parents[b]))
                for child in children:
                    self.evaluate(child)
                self.iteration += 1
                self.restart_rng, self.restart_evaluated = self.rng.bit_generator.state, len(self.evaluated)
                self._save()
                bar.update(1)
                bar.set_postfix(frontier=len(parents), evaluated=len(self.evaluated))
        return self.finish(constant)

    def finish(self, constant: list[Units]) -> Frontier:
        """Time every frontier point and constant-ratio configuration; write frontier.json."""
        frontier = self.frontier_units()
        for units in dict.fromkeys([*frontier, *constant]):
            record = self.evaluated[units]
            lengths = self.lengths(units)
            if "throughput" not in record:
                record.setdefault("latency_ms", self._latency(lengths))
                record["throughput"] = self._throughput(lengths)
        self._save()
        result = Frontier(
            points=[self._with_measured(u) for u in frontier],
            objective=self.settings.objective,
            heldout={
                "files": list(self.settings.data),
                "questions": len(self.examples),
                "windows": len(self.flat),
                "mean_window_length": self.mean_length,
                "search": asdict(self.settings) | {"json": None, "quiet": None},
            },
            machine=machine(),
            constant_ratio=[self._with_measured(u) for u in constant],
            selector=self.selector,
            dtype=self.qa.dtype,
        )
        result.margin_points = self.margin_points(result.full, self.settings.measure_dtypes)
        result.default_dtype = result.fastest_close_to_fp32()
        result.save(self.qa.folder)
        return result

    def margin_points(self, full: Point, dtypes: Sequence[str], earlier: Sequence[Point] = ()) -> list[Point]:
        """The --margins configurations, and those --margin-iterations evolve, run on the held-out
        windows, with the `earlier` margin points not run again: the Pareto-optimal ones against
        `full`, cheapest first, timed here and measured in `dtypes` too (those without these
        measurements)."""
        if not self.margins and not self.settings.margin_iterations:
            return list(earlier)
        evolution = self._margin_evolution(full)
        bar = tqdm(
            self.margins, desc="margins", unit="configuration", disable=self.settings.quiet, file=sys.stderr
        )
        for margins in bar:
            evolution.point(margins)
        if self.settings.margin_iterations:
            grid = margin_grid(self.settings.margin_step, self.settings.margin_top)
            initial = [*initial_margins(self.layers, self.settings.population, grid), *self.margins]
            evolution.run(
                full,
                self.settings.margin_iterations,
                initial,
                grid,
                self.settings.mutations,
                self.settings.crossovers,
                self.settings.mutation_prob,
            )
        points = [*(p for p in earlier if p.margins not in evolution.points), *evolution.points.values()]
        best = pareto(points, full)[:-1]
        for point in best:
            if point.latency_ms_batch1 is None:
                point.latency_ms_batch1 = self._latency(None, margins=point.margins)
                point.throughput_batch32 = self._throughput(None, margins=point.margins)
            for dtype, qa in self._other_precisions(dtypes):
                if dtype not in point.by_dtype:
                    point.by_dtype[dtype] = self._measure(qa, None, point.margins)
        return best

    def _margin_evolution(self, full: Point) -> MarginEvolution:
        """The margin configurations' evaluations, resumed from the state file beside the search's."""

        def evaluate(margins: Margins) -> Point:
            result = self._evaluate(self.qa, None, margins)  # its flops_ratio: against the full model's
            return Point(
                lengths=(1.0,) * self.layers,
                flops_ratio=result.flops_ratio,
                gflops_at_384=None,
                gflops_at_mean_length=result.flops_ratio * full.gflops_at_mean_length,
                heldout_exact_match=result.exact_match,
                heldout_f1=result.f1,
                margins=margins,
            )

        settings = self.settings
        key = settings.key() | {
            "dtype": self.qa.dtype,
            "margins": list(settings.margins),
            "margin_step": settings.margin_step,
            "margin_top": settings.margin_top,
        }
        return MarginEvolution(evaluate, self.margins_state_path, key, settings.seed, settings.quiet)

    @property
    def margins_state_path(self) -> Path:
        """The margin evolution's state, beside the search's."""
        return self.state_path.with_name(f"{self.state_path.stem}.margins.json")

    def _with_measured(self, units: Units) -> Point:
        """The configuration's point, with its measurements in each of --measure-dtypes."""
        point = self.point(units)
        for dtype, qa in self._other_precisions():
            records = self.measured.setdefault(dtype, {})
            if units not in records:
                records[units] = asdict(self._measure(qa, self.lengths(units)))
                self._save()
            point.by_dtype[dtype] = Measured(**records[units])
        return point

    def _other_precisions(
        self, dtypes: Sequence[str] | None = None
    ) -> Iterator[tuple[str, QuestionAnswerer]]:
        """(dtype, the model in it) for each of `dtypes` (default --measure-dtypes) besides the
        search's own."""
        for dtype in dict.fromkeys(self.settings.measure_dtypes if dtypes is None else dtypes):
            if dtype != self.qa.dtype:
                if dtype not in self._models:
                    self._models[dtype] = QuestionAnswerer.from_pretrained(
                        self.qa.folder, device=self.qa.device, dtype=dtype
                    )
                yield dtype, self._models[dtype]

    def _measure(
        self, qa: QuestionAnswerer, lengths: Lengths | None, margins: Margins | None = None
    ) -> Measured:
        """Held-out accuracy, latency and throughput of one configuration in qa's precision."""
        result = self._evaluate(qa, lengths, margins)
        return Measured(
            heldout_exact_match=result.exact_match,
            heldout_f1=result.f1,
            latency_ms_batch1=self._latency(lengths, qa, margins),
            throughput_batch32=self._throughput(lengths, qa, margins),
        )

    def _frontier(self) -> tuple[Frontier, str, str]:
        """The model's frontier.json, in the selector and precision it was searched in; the
        questions it was searched on and those --data, --limit and --sample give, as named."""
        frontier = Frontier.load(self.qa.folder)
        if frontier is None:
            raise SearchError(f"{self.qa.folder} has no frontier.json to measure: run the search first")
        if frontier.selector != self.selector or frontier.dtype != self.qa.dtype:
            raise SearchError(
                f"the frontier was searched with the {frontier.selector} selector in {frontier.dtype}: "
                f"give --selector {frontier.selector} --dtype {frontier.dtype}"
            )
        searched = frontier.heldout.get("search", {})
        recorded = _questions(frontier.heldout.get("questions"), searched.get("sample"), searched.get("seed"))
        given = _questions(len(self.examples), self.settings.sample, self.settings.seed)
        return frontier, recorded, given

    def measure_only(self) -> Frontier:
        """--measure-only: the points of the model's frontier.json measured in --measure-dtypes, on
        the held-out questions it was searched on; the default precision chosen again."""
        frontier, recorded, given = self._frontier()
        if recorded != given:
            files = ", ".join(frontier.heldout.get("files", []))
            raise SearchError(
                f"the frontier was measured on {recorded} ({files}); --data, --limit, --sample give {given}"
            )
        points = [*frontier.points, *frontier.constant_ratio, *frontier.margin_points]
        if frontier.dtype in self.settings.measure_dtypes:  # its own precision: timed again
            for point in tqdm(
                points, desc=frontier.dtype, unit="point", disable=self.settings.quiet, file=sys.stderr
            ):
                point.latency_ms_batch1 = self._latency(point.config, margins=point.margins)
                point.throughput_batch32 = self._throughput(point.config, margins=point.margins)
        for dtype, qa in self._other_precisions():
            for point in tqdm(points, desc=dtype, unit="point", disable=self.settings.quiet, file=sys.stderr):
                point.by_dtype[dtype] = self._measure(qa, point.config, point.margins)
        settings = self.settings
        if self.margins or settings.margin_iterations:
            # in the precisions every point has, so that budgets compare like with like
            dtypes = [*frontier.full.by_dtype, *settings.measure_dtypes]
            frontier.margin_points = self.margin_points(frontier.full, dtypes, frontier.margin_points)
            asked = [*frontier.heldout.get("margins", []), *settings.margins]
            frontier.heldout["margins"] = list(dict.fromkeys(asked))
        if settings.margin_iterations:
            names = (
                "margin_iterations",
                "margin_step",
                "margin_top",
                "population",
                "mutations",
                "crossovers",
                "mutation_prob",
                "seed",
            )
            frontier.heldout["margin_search"] = {name: getattr(settings, name) for name in names}
        frontier.default_dtype = frontier.fastest_close_to_fp32()
        frontier.save(self.qa.folder)
        return frontier

    def confirm(self) -> Frontier:
        """--confirm: every point of the frontier (shares and margin points) scored on --data, other
        questions than those it was searched on, saved after each point (a stopped run goes on
        from there; other questions start again); budgets pick by these scores (Frontier.pick)."""
        frontier, recorded, given = self._frontier()
        if recorded == given and frontier.heldout.get("files") == list(self.settings.data):
            raise SearchError(
                "--data, --limit and --sample give the questions the frontier was searched on; confirm "
                "it on others (e.g. the rest of the held-out split)"
            )
        record = {
            "files": list(self.settings.data),
            "questions": len(self.examples),
            "windows": len(self.flat),
            "limit": self.settings.limit,
            "sample": self.settings.sample,
            "seed": self.settings.seed if self.settings.sample else None,
        }
        points = [*frontier.points, *frontier.margin_points]
        if frontier.heldout.get("confirmed") != record:
            for point in points:
                point.confirmed_exact_match = point.confirmed_f1 = None
            frontier.heldout["confirmed"] = record
        left = [p for p in points if p.confirmed_f1 is None]
        for point in tqdm(left, desc="confirm", unit="point", disable=self.settings.quiet, file=sys.stderr):
            result = self._evaluate(self.qa, point.config, point.margins)
            point.confirmed_exact_match, point.confirmed_f1 = result.exact_match, result.f1
            frontier.save(self.qa.folder)
        frontier.save(self.qa.folder)
        return frontier

    def _save(self) -> None:
        state = {
            "settings": self.settings.key(),
            "iteration": self.iteration,
            "rng": self.restart_rng,
            "restart_evaluated": self.restart_evaluated,
            "evaluated": {",".join(map(str, units)): record for units, record in self.evaluated.items()},
            "measured": {
                dtype: {",".join(map(str, units)): record for units, record in records.items()}
                for dtype, records in self.measured.items()
            },
        }
        atomic_write(self.state_path, lambda path: path.write_text(json.dumps(state)))

    def _resume(self) -> None:
        state = saved_state(self.state_path, self.settings.key())
        if state is None:
            return
        if state["iteration"] > self.settings.iterations:
            print(
                f"{self.state_path} has run {state['iteration']} iterations, more than "
                f"--iterations {self.settings.iterations}; starting afresh",
                file=sys.stderr,
            )
            return
        self.iteration = state["iteration"]
        self.rng.bit_generator.state = self.restart_rng = state["rng"]
        self.evaluated = {self._units_of(key): record for key, record in state["evaluated"].items()}
        # a state saved before stops inside an iteration were kept was saved at its end
        self.restart_evaluated = state.get("restart_evaluated", len(self.evaluated))
        self.measured = {
            dtype: {self._units_of(key): record for key, record in records.items()}
            for dtype, records in state.get("measured", {}).items()
        }


def _questions(count: int | None, sample: int | None, seed: int | None) -> str:
    """Which held-out questions a search ran on, as its messages name them."""
    drawn = f" drawn by --sample {sample} --seed {seed}" if sample else ""
    return f"{count} held-out questions{drawn}"


def search(settings: SearchSettings) -> Frontier:
    settings.check()
    if Path(settings.model).resolve() == DEFAULT_MODEL.resolve() and not settings.force:
        raise SearchError(
            f"{settings.model} is the model that ships with the package, and the search would overwrite "
            "its frontier.json: search a copy of the folder, or give --force"
        )
    qa = QuestionAnswerer.from_pretrained(settings.model, dtype=settings.dtype)
    if not isinstance(qa.model, DynamicBertForQuestionAnswering):
        raise SearchError(f"{settings.model} is not a BERT model: only BERT models drop tokens")
    searcher = Search(qa, settings)
    check_writable(qa.folder)  # frontier.json goes there: fail now, not after the search
    check_target(searcher.state_path)
    check_target(searcher.margins_state_path)
    if settings.confirm:
        frontier = searcher.confirm()
    else:
        frontier = searcher.measure_only() if settings.measure_only else searcher.run()
    if settings.json:
        print(json.dumps([p.to_dict() for p in [*frontier.points, *frontier.margin_points]]))
    else:
        for p in [*frontier.points, *frontier.margin_points]:
            print(
                f"{p.label:>40}  FLOPs {p.flops_ratio:.3f}  "
                f"held-out F1 {p.heldout_f1:.2f}  EM {p.heldout_exact_match:.2f}  "
                + ("" if p.confirmed_f1 is None else f"confirmed F1 {p.confirmed_f1:.2f}  ")
                + f"{p.latency_ms_batch1:.1f} ms  {p.throughput_batch32:.1f} windows/s  ({frontier.dtype})"
                + "".join(
                    f"; {d}: F1 {m.heldout_f1:.2f} {m.latency_ms_batch1:.1f} ms "
                    f"{m.throughput_batch32:.1f} windows/s"
                    for d, m in p.by_dtype.items()
                )
            )
        print(f"default precision: {frontier.default_dtype}")
    return frontier
