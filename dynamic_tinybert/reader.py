"""The user-facing object: load a model once, answer questions at any length configuration.

    >>> qa = QuestionAnswerer.from_pretrained("path/to/model")           # doctest: +SKIP
    >>> qa(question="What is the number I told you?",
    ...    context="remember the number 123456, I'll ask you later.")   # doctest: +SKIP
    {'score': 0.98, 'start': 20, 'end': 26, 'answer': '123456'}

Calls follow the transformers question-answering pipeline: one pair gives a dict (a list with
top_k > 1), several pairs (a list of dicts, or several dicts) give a list of those.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint
from .answers import ANSWERS, NO_ANSWER, Answer, AnswerSettings, rank_answers, window_spans
from .data import Example, batches_by_length, check_answerable, collate, gold_answers, has_text, is_unicode
from .devices import resolve_device
from .frontier import BudgetError, Frontier, Point
from .lengths import (
    Lengths,
    Margins,
    counts_macs,
    encoder_gflops,
    margins_to_json,
    mean_gflops,
    validate_lengths,
    validate_margins,
)
from .metrics import squad_scores
from .model import DynamicBertForQuestionAnswering
from .precision import DtypeError, PrecisionFallback, apply_dtype, check_dtype, dtype_name
from .selector import SelectorError
from .tokenizer import QATokenizer, Window


@dataclass
class Calibration:
    """How a budget's pick was checked against the text it ran on (QuestionAnswerer.calibrated):
    the margin points it ran on a sample of the windows, and what they cost there."""

    windows: int  # the sample: evenly spaced over the text's windows
    of: int  # the text's windows
    seconds: float  # the sample's runs
    measured: list[tuple[Point, float]]  # each margin point run, with its FLOPs ratio on the sample

    def to_dict(self) -> dict:
        return {
            "windows": self.windows,
            "of": self.of,
            "seconds": self.seconds,
            "measured": [
                {
                    "margins": margins_to_json(point.margins),
                    "heldout_flops_ratio": point.flops_ratio,
                    "flops_ratio": ratio,
                }
                for point, ratio in self.measured
            ],
        }


@dataclass
class Prediction:
    """Answers to a set of questions, by id, and what running them cost (QuestionAnswerer.predict)."""

    answers: dict[str, list[Answer]]  # id -> its best answers, best first; [] where none was found
    windows: int
    gflops_per_window: float  # mean over windows, each at its own length (dynamic padding)
    gflops_per_window_at_384: float  # the padded convention of the papers
    seconds: float  # wall time of tokenising, running and post-processing
    lengths: Lengths | None = None  # the configuration that ran
    point: Point | None = None  # the frontier point a budget picked
    selector: str = "attention"  # which tokens dropping layers kept: "attention" or "learned"
    dtype: str = "fp32"  # the precision it ran in
    margins: Margins | None = None  # the margins that ran instead of lengths (then GFLOPs are measured)
    flops_ratio: float = 1.0  # gflops_per_window against the full model's on the same windows
    calibration: Calibration | None = None  # how the budget's pick was checked on these windows

    @property
    def questions(self) -> int:
        return len(self.answers)

    @property
    def predictions(self) -> dict[str, str]:
        """id -> the best answer's text ("" where none was found), SQuAD's official format."""
        return {qid: answers[0].text if answers else "" for qid, answers in self.answers.items()}


@dataclass
class Evaluation(Prediction):
    """A Prediction scored with the official SQuAD 1.1 metric against the gold answers."""

    exact_match: float = 0.0
    f1: float = 0.0


class Choice(NamedTuple):
    """What runs: lengths, or margins (at most one of them not None: None and None is the full
    model), and the frontier point a budget picked."""

    lengths: Lengths | None
    margins: Margins | None
    point: Point | None


class QuestionAnswerer:
    def __init__(
        self,
        model: DynamicBertForQuestionAnswering,
        tokenizer: QATokenizer,
        folder: Path | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ):
        """dtype: "fp32", "bf16" or "int8" (precision.py), refused where the device cannot run
        it; None: the model folder's default precision (its frontier's default_dtype; fp32
        instead, with a warning, where the device cannot run that)."""
        self.device = resolve_device(device)
        self.folder = folder
        self.frontier = Frontier.load(folder) if folder is not None else None
        self.dtype = dtype_name(dtype) if dtype is not None else self._default_dtype()
        check_dtype(self.dtype, self.device)
        self.model = apply_dtype(model.eval(), self.dtype, self.device).to(self.device)
        self.tokenizer = tokenizer

    def _default_dtype(self) -> str:
        wanted = self.frontier.default_dtype if self.frontier is not None else "fp32"
        try:
            check_dtype(wanted, self.device)
        except DtypeError as error:
            message = f"{self.folder} runs in {wanted} by default; here it runs in fp32 instead: {error}"
            warnings.warn(message, PrecisionFallback, stacklevel=3)
            return "fp32"
        return wanted

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> QuestionAnswerer:
        """Load a transformers-layout QA checkpoint from a folder or a Hub id (None: the default
        model that ships with the package): BERT runs in our length-adaptive model, other types
        (a teacher) through transformers at full length. dtype: "fp32", "bf16" or "int8"; None:
        the folder's default precision."""
        model, tokenizer, folder = checkpoint.load_qa_model(name_or_path)
        return cls(model, tokenizer, folder, device or "cpu", dtype)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def choose(
        self,
        lengths: Sequence[float] | None = None,
        budget: float | None = None,
        speedup: float | None = None,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        margin_points: bool = True,
    ) -> Choice:
        """The configuration to run: lengths or margins as given, or the frontier point a budget
        picks (the frontier was searched with one selector, and holds only for that one), among
        its margin points too unless `margin_points` is False."""
        selector = self.resolve_selector(selector)
        if (checked := validate_margins(margins, self.num_layers)) is not None:
            if lengths is not None or budget is not None or speedup is not None:
                raise ValueError("give margins, or lengths, a budget or a speedup, not two of them")
            if selector != "learned":
                if getattr(self.model, "selector", None) is None:
                    raise SelectorError(
                        "margins compare the learned selector's scores, and this model has none "
                        "(no selector.safetensors); give lengths or a budget instead"
                    )
                raise SelectorError("margins compare the learned selector's scores; use --selector learned")
            return Choice(None, checked, None)
        if budget is None and speedup is None:
            return Choice(validate_lengths(lengths, self.num_layers), None, None)
        if lengths is not None:
            raise ValueError("give lengths, or a budget or speedup, not both")
        if self.frontier is None:
            raise BudgetError(
                f"the model {self.folder} has no frontier ({'frontier.json'}); run `dynamic-tinybert search` "
                "on it first, or give lengths (one share per layer) instead"
            )
        if self.frontier.selector != selector:
            raise BudgetError(
                f"the frontier of {self.folder} was searched with the {self.frontier.selector} selector, "
                f"not the {selector} one; use --selector {self.frontier.selector}, give --lengths, or "
                f"search again with --selector {selector}"
            )
        point = self.frontier.pick(budget=budget, speedup=speedup, dtype=self.dtype, margins=margin_points)
        return Choice(point.config, point.margins, point)

    def __call__(
        self,
        *args,
        question: str | Sequence[str] | None = None,
        context: str | Sequence[str] | None = None,
        top_k: int | None = None,
        max_answer_len: int = ANSWERS.max_answer_len,
        lengths: Sequence[float] | float | None = None,
        budget: float | None = None,
        speedup: float | None = None,
        batch_size: int = ANSWERS.batch_size,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        **pipeline_options,
    ) -> dict | list:
        """qa(question=..., context=...), qa(question, context), qa({"question", "context"}),
        qa({...}, {...}, ...) or qa([{...}, ...]); top_k None: 1 (`topk` is its deprecated name,
        as in the pipeline)."""
        top_k = self._pipeline_options(top_k, pipeline_options)
        if args:
            if question is not None or context is not None:
                raise ValueError(
                    "give the inputs either as positional arguments (dicts, a list of them, or a question "
                    "and a context) or as question= and context=, not both"
                )
            questions, contexts, single = _positional_pairs(args)
        else:
            if question is None or context is None:
                raise ValueError("give question= and context=, or a dict or list of dicts")
            for name, value in (("question", question), ("context", context)):
                if not isinstance(value, str) and not (
                    isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
                ):
                    raise TypeError(f"{name} must be a string or a list of strings, got {value!r:.80}")
            single = isinstance(question, str)
            questions = [question] if single else list(question)
            contexts = [context] * len(questions) if isinstance(context, str) else list(context)
        lengths, margins, _ = self.choose(lengths, budget, speedup, selector, margins)
        results = self.answer(
            questions,
            contexts,
            top_k,
            max_answer_len,
            lengths,
            batch_size,
            selector=selector,
            margins=margins,
        )
        shaped = [
            (answers[0] if answers else NO_ANSWER).to_dict() if top_k == 1 else [a.to_dict() for a in answers]
            for answers in results
        ]
        return shaped[0] if single else shaped

    def _pipeline_options(self, top_k: int | None, options: dict) -> int:
        """top_k from top_k or its deprecated name `topk`; ValueError for the other parameters of
        the transformers pipeline, which this reader does not take, saying why, unless they hold
        the value this reader runs with."""
        topk = options.pop("topk", None)
        if topk is not None:
            warnings.warn("topk is deprecated, use top_k", FutureWarning, stacklevel=3)
            if top_k is not None and top_k != topk:
                raise ValueError(f"give top_k or its old name topk, not both (got {top_k!r} and {topk!r})")
            top_k = topk
        settings = self.tokenizer.settings
        windows = (
            f"windows of {settings.max_length} tokens overlapping by {settings.stride} are fixed by how "
            "the model was trained"
        )
        # what each does not do here, and the value it has here (None: none), which code written
        # for the pipeline may give, and which is then taken
        unsupported = {
            "doc_stride": (windows, settings.stride),
            "max_seq_len": (windows, settings.max_length),
            "max_question_len": (
                f"a question is read whole up to {settings.max_query_length} tokens (half the window) "
                "and cut beyond that with a warning",
                settings.max_query_length,
            ),
            "handle_impossible_answer": (
                "the model was trained on SQuAD 1.1, which has no unanswerable questions, so it always "
                "gives a span",
                False,
            ),
            "align_to_words": ("answers are spans of wordpiece tokens, not widened to whole words", False),
            "padding": ("each batch is padded to its longest window (dynamic padding)", None),
        }
        for name, value in options.items():
            if name not in unsupported:
                raise TypeError(f"QuestionAnswerer() got an unexpected keyword argument {name!r}")
            reason, here = unsupported[name]
            if here is None or (type(value), value) != (type(here), here):
                only = "" if here is None else f" (only {name}={here!r} is taken)"
                said = f"this reader does not support the pipeline parameter {name}: {reason}"
                raise ValueError(said + only)
        return ANSWERS.top_k if top_k is None else top_k

    def answer(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        top_k: int = ANSWERS.top_k,
        max_answer_len: int = ANSWERS.max_answer_len,
        lengths: Sequence[float] | None = None,
        batch_size: int = ANSWERS.batch_size,
        progress: bool = False,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
    ) -> list[list[Answer]]:
        """The top_k answers of each (question, context) pair, best first."""
        _check_inputs(questions, contexts, top_k, max_answer_len, batch_size)
        windows = self.tokenizer.encode_windows(questions, contexts)
        return self.answer_windows(
            windows, contexts, top_k, max_answer_len, lengths, batch_size, progress, selector, margins
        )

    def answer_windows(
        self,
        windows: Sequence[Sequence[Window]],
        contexts: Sequence[str],
        top_k: int = ANSWERS.top_k,
        max_answer_len: int = ANSWERS.max_answer_len,
        lengths: Sequence[float] | None = None,
        batch_size: int = ANSWERS.batch_size,
        progress: bool = False,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        token_counts: list[list[int]] | None = None,
    ) -> list[list[Answer]]:
        """answer() on pairs already cut into windows (by self.tokenizer.encode_windows)."""
        lengths = validate_lengths(lengths, self.num_layers)
        logits = self.window_logits(
            [w for ws in windows for w in ws], lengths, batch_size, progress, selector, margins, token_counts
        )
        return self.rank_windows(windows, contexts, logits, top_k, max_answer_len)

    @staticmethod
    def rank_windows(
        windows: Sequence[Sequence[Window]],
        contexts: Sequence[str],
        logits: Sequence[tuple[np.ndarray, np.ndarray]],
        top_k: int = ANSWERS.top_k,
        max_answer_len: int = ANSWERS.max_answer_len,
    ) -> list[list[Answer]]:
        """The top_k answers of each pair from the start and end logits of its windows (in the
        order of the flattened windows)."""
        results, i = [], 0
        for context, pair_windows in zip(contexts, windows, strict=True):
            spans = []
            for window in pair_windows:
                start, end = logits[i]
                spans += window_spans(window, start, end, max_answer_len=max_answer_len)
                i += 1
            results.append(rank_answers(context, spans, top_k))
        return results

    def window_logits(
        self,
        windows: Sequence[Window],
        lengths: Lengths | None,
        batch_size: int,
        progress: bool = False,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        token_counts: list[list[int]] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of each window, run in batches of similar length. `token_counts`,
        a list, receives each window's n(0), ..., n(L) (QAOutput.token_counts), in window order."""
        options = {} if selector is None else {"selector": selector}  # a teacher takes no selector
        if margins is not None:
            options["margins"] = margins
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(windows)
        counts: list[list[int] | None] = [None] * len(windows)
        bar = tqdm(
            total=len(windows), unit="window", disable=not progress, mininterval=0.5, dynamic_ncols=True
        )
        with torch.inference_mode(), bar:
            for batch in batches_by_length([len(w) for w in windows], batch_size):
                inputs = collate([windows[i] for i in batch], self.device)
                result = self.model(**inputs, lengths=lengths, **options)
                starts = result.start_logits.float().cpu().numpy()
                ends = result.end_logits.float().cpu().numpy()
                for row, i in enumerate(batch):
                    n = len(windows[i])
                    out[i] = (starts[row, :n], ends[row, :n])
                    counts[i] = result.token_counts[row] if result.token_counts else None
                bar.update(len(batch))
        if token_counts is not None:
            token_counts.extend(counts)
        return out

    def predict(
        self,
        examples: Sequence[Example],
        lengths: Sequence[float] | None = None,
        batch_size: int = ANSWERS.batch_size,
        max_answer_len: int = ANSWERS.max_answer_len,
        progress: bool = False,
        budget: float | None = None,
        speedup: float | None = None,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        top_k: int = ANSWERS.top_k,
        margin_points: bool = True,
        calibrate: int | None = None,
    ) -> Prediction:
        """Answer every example (gold answers, where it has them, are not read): the `top_k` best
        answers of each question by id, and the cost. `.predictions` is SQuAD's official
        {id: answer} file. `margin_points`: whether a budget may pick margin points;
        `calibrate` N: a budget picks by margin points' FLOPs on N of these windows
        (`calibrated`), not on the held-out questions; seconds include that."""
        examples = _examples(examples)
        AnswerSettings(top_k, max_answer_len, batch_size).check()
        if calibrate is not None:
            check_calibration(calibrate, budget)
        lengths, margins, point = self.choose(lengths, budget, speedup, selector, margins, margin_points)
        began = time.perf_counter()
        windows = self.tokenizer.encode_examples(examples)
        calibration = None
        if calibrate is not None and point is not None and (flat := [w for ws in windows for w in ws]):
            point, calibration = self.calibrated(budget, flat, calibrate, batch_size, selector, margin_points)
            lengths, margins = point.config, point.margins
        result = self.predict_windows(
            examples, windows, lengths, batch_size, max_answer_len, progress, selector, margins, top_k
        )
        result.seconds = time.perf_counter() - began
        result.point = point
        result.calibration = calibration
        return result

    def calibrated(
        self,
        budget: float,
        windows: Sequence[Window],
        sample: int,
        batch_size: int = ANSWERS.batch_size,
        selector: str | None = None,
        margin_points: bool = True,
    ) -> tuple[Point, Calibration]:
        """The point a budget picks for these windows: a margin point's FLOPs are a mean over the
        windows it ran, and other text averages more or less than the held-out questions (SQuAD
        dev kept more), so the margin points that would be picked run on `sample` windows spread
        evenly over these, and the most accurate point whose cost there fits the budget is
        picked. Lazily: the pick's candidate is run, and the FLOPs of the margin points not run
        yet are estimated as their held-out ones times what the last one run cost there against
        its held-out ones. A share point's cost on the sample follows from its windows' lengths
        (no run)."""
        if self.frontier is None:
            raise BudgetError(f"the model {self.folder} has no frontier to pick from")
        began = time.perf_counter()
        n = min(sample, len(windows))
        picked = [windows[(2 * i + 1) * len(windows) // (2 * n)] for i in range(n)]
        tokens = [len(w) for w in picked]
        full = mean_gflops(self.model.config, tokens)
        scorer = self.scorer_macs(selector)
        shares = {
            id(p): mean_gflops(self.model.config, tokens, p.config, scorer) / full
            for p in self.frontier.points
        }
        measured: dict[int, tuple[Point, float]] = {}
        scale = 1.0

        def estimate(p: Point) -> float:
            if p.margins is None:
                return shares[id(p)]
            return measured[id(p)][1] if id(p) in measured else p.flops_ratio * scale

        while True:
            point = self.frontier.pick(budget=budget, dtype=self.dtype, margins=margin_points, cost=estimate)
            if point.margins is None or id(point) in measured:
                break
            counts: list[list[int]] = []
            self.window_logits(picked, None, batch_size, False, selector, point.margins, counts)
            ratio = measured_gflops(self.model.config, counts, point.margins, scorer) / full
            measured[id(point)] = (point, ratio)
            scale = ratio / point.flops_ratio
        calibration = Calibration(n, len(windows), time.perf_counter() - began, list(measured.values()))
        return point, calibration

    def evaluate(
        self,
        examples: Sequence[Example],
        lengths: Sequence[float] | None = None,
        batch_size: int = ANSWERS.batch_size,
        max_answer_len: int = ANSWERS.max_answer_len,
        progress: bool = False,
        budget: float | None = None,
        speedup: float | None = None,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        margin_points: bool = True,
        calibrate: int | None = None,
    ) -> Evaluation:
        """Answer every example and score the answers with the official SQuAD metric (options as
        in predict)."""
        examples = _examples(examples)
        check_answerable(examples, "the examples")
        prediction = self.predict(
            examples,
            lengths,
            batch_size,
            max_answer_len,
            progress,
            budget,
            speedup,
            selector,
            margins,
            margin_points=margin_points,
            calibrate=calibrate,
        )
        return _scored(prediction, examples)

    def predict_windows(
        self,
        examples: Sequence[Example],
        windows: Sequence[Sequence[Window]],
        lengths: Lengths | None,
        batch_size: int = ANSWERS.batch_size,
        max_answer_len: int = ANSWERS.max_answer_len,
        progress: bool = False,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
        top_k: int = ANSWERS.top_k,
    ) -> Prediction:
        """predict() on examples already cut into windows; seconds counts running and
        post-processing only. Under margins the GFLOPs are those of the tokens each window kept."""
        began = time.perf_counter()
        contexts = [e.context for e in examples]
        margins = validate_margins(margins, self.num_layers)
        counts: list[list[int]] = []
        results = self.answer_windows(
            windows, contexts, top_k, max_answer_len, lengths, batch_size, progress, selector, margins, counts
        )
        seconds = time.perf_counter() - began
        config = self.model.config
        scorer = self.scorer_macs(selector)
        flat = [w for ws in windows for w in ws]
        tokens = [len(w) for w in flat]
        if not flat:
            gflops = 0.0
        elif margins is None:
            gflops = mean_gflops(config, tokens, lengths, scorer)
        else:
            gflops = measured_gflops(config, counts, margins, scorer)
        return Prediction(
            answers={e.id: answers for e, answers in zip(examples, results, strict=True)},
            windows=len(flat),
            gflops_per_window=gflops,
            gflops_per_window_at_384=encoder_gflops(config, 384, lengths, scorer),
            seconds=seconds,
            lengths=lengths,
            selector=self.resolve_selector(selector),
            dtype=self.dtype,
            margins=margins,
            flops_ratio=gflops / mean_gflops(config, tokens) if flat else 1.0,
        )

    def evaluate_windows(
        self,
        examples: Sequence[Example],
        windows: Sequence[Sequence[Window]],
        lengths: Lengths | None,
        batch_size: int = ANSWERS.batch_size,
        max_answer_len: int = ANSWERS.max_answer_len,
        progress: bool = False,
        selector: str | None = None,
        margins: Sequence[float] | float | None = None,
    ) -> Evaluation:
        """evaluate() on examples already cut into windows (the search runs many configurations
        on the same windows); seconds counts running and post-processing only."""
        prediction = self.predict_windows(
            examples, windows, lengths, batch_size, max_answer_len, progress, selector, margins
        )
        return _scored(prediction, examples)

    def resolve_selector(self, selector: str | None = None) -> str:
        """ "learned" or "attention": as asked, else the learned one where the model has it (a
        model that does not drop tokens, a teacher, reports "attention")."""
        resolve = getattr(self.model, "resolve_selector", None)
        return resolve(selector) if resolve else "attention"

    def scorer_macs(self, selector: str | None = None) -> int:
        """The cost model's selector term for this model and selector."""
        scorer = getattr(self.model, "scorer_macs", None)
        return scorer(selector) if scorer else 0


def _examples(examples) -> list[Example]:
    """The examples of predict() and evaluate() as a list (a generator is read once); anything
    but Example objects is refused, saying how to make them."""
    examples = list(examples)
    for example in examples:
        if not isinstance(example, Example):
            raise TypeError(
                f"examples must be dynamic_tinybert.Example objects (read_squad(path) gives them), got "
                f"{example!r:.60}; for question/context pairs call the reader itself: qa([{{...}}, ...])"
            )
    return examples


def _scored(prediction: Prediction, examples: Sequence[Example]) -> Evaluation:
    """The prediction with its official SQuAD scores against the examples' gold answers."""
    scores = squad_scores(gold_answers(examples), prediction.predictions)
    copied = {f.name: getattr(prediction, f.name) for f in fields(Prediction)}
    return Evaluation(**copied, exact_match=scores.exact_match, f1=scores.f1)


def check_calibration(sample, budget: float | None) -> None:
    """A calibration's sample: a count of windows, with a budget to check them against."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"calibrate must be a whole number of windows, 1 or more, got {sample!r:.40}")
    if budget is None:
        raise ValueError("calibrate checks how a budget is met on the text: give a budget too")


def measured_gflops(config, counts: Sequence[Sequence[int]], margins: Margins, scorer_macs: int) -> float:
    """Mean GFLOPs per window of windows that kept these token counts under margins (the
    selector scores every layer whose margin is finite)."""
    scored = [not np.isinf(m) for m in margins]
    return float(np.mean([2 * counts_macs(config, c, scorer_macs, scored) / 1e9 for c in counts]))


def _positional_pairs(args: tuple) -> tuple[list, list, bool]:
    """Questions, contexts and whether it is one pair, from the positional forms of a call:
    (question, context) as two strings, one or more {"question", "context"} dicts, or one list
    of them (as the transformers pipeline takes them)."""
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        return [args[0]], [args[1]], True
    if all(isinstance(a, dict) for a in args):
        pairs = list(args)
    elif len(args) == 1 and isinstance(args[0], (list, tuple)):
        pairs = list(args[0])
    else:
        given = ", ".join(f"{a!r:.40}" for a in args)
        raise ValueError(
            "give a dict with 'question' and 'context', several such dicts, a list of them, or a question "
            f"and a context as two strings; got {given:.200}"
        )
    try:
        questions, contexts = [p["question"] for p in pairs], [p["context"] for p in pairs]
    except (KeyError, TypeError):
        raise ValueError("each input must be a dict with 'question' and 'context'") from None
    return questions, contexts, len(args) == 1 and isinstance(args[0], dict)


def _check_inputs(
    questions: Sequence[str], contexts: Sequence[str], top_k: int, max_answer_len: int, batch_size: int
) -> None:
    for name, values in (("questions", questions), ("contexts", contexts)):
        if isinstance(values, (str, bytes)):
            raise ValueError(
                f"{name} must be a list of strings, one per pair, not one string {values!r:.40} "
                "(for one pair give [question], [context])"
            )
    if len(questions) != len(contexts):
        raise ValueError(f"got {len(questions)} questions but {len(contexts)} contexts")
    for i, (q, c) in enumerate(zip(questions, contexts, strict=True)):
        if not isinstance(q, str) or not has_text(q):
            raise ValueError(f"question {i} is empty or not a string")
        if not isinstance(c, str) or not has_text(c):
            raise ValueError(f"context {i} is empty or not a string")
        for name, text in (("question", q), ("context", c)):
            if not is_unicode(text):
                raise ValueError(
                    f"{name} {i} is not valid Unicode (it holds a lone surrogate: text decoded with "
                    "errors='surrogateescape', or a JSON '\\ud800' escape); decode it as UTF-8"
                )
    AnswerSettings(top_k, max_answer_len, batch_size).check()
