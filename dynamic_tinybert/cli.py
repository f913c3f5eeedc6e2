"""The `dynamic-tinybert` command: a thin adapter over reader.py.

Bad input (a missing or invalid model folder, a missing or malformed data file, a malformed
--lengths, an output file that cannot be written, checked before the work) ends with exit code 2
and one line on stderr, never a traceback; what the machine refuses while writing (a full disk)
with exit code 1 and one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from .answers import ANSWERS, AnswerSettings, AnswerSettingsError
from .checkpoint import CheckpointError
from .config import SELECTORS
from .data import SquadFormatError, check_answerable, has_text, is_unicode, read_examples
from .devices import DeviceError, resolve_device
from .files import atomic_write, written_in_place
from .frontier import BudgetError
from .lengths import LengthsError, format_margins, margins_to_json, parse_lengths, parse_margins
from .options import UsageError, add_dataclass_options, check_count, settings_from
from .precision import DTYPES, DtypeError, PrecisionFallback, check_dtype
from .reader import QuestionAnswerer
from .search import SearchError
from .selector import SelectorError
from .stopping import Stopped
from .tokenizer import QuestionCut
from .train_settings import TrainingError
from .transformers_qa import VocabularyError

EXIT_USAGE = 2
EXIT_MACHINE = 1  # what the machine refused (a read-only folder, a full disk), not the input


# what bad input raises; each is printed as one line, with exit code 2
USER_ERRORS = (
    UsageError,
    CheckpointError,
    SquadFormatError,
    LengthsError,
    BudgetError,
    TrainingError,
    VocabularyError,
    SearchError,
    SelectorError,
    DeviceError,
    AnswerSettingsError,
    DtypeError,
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model folder, or a Hugging Face Hub id (default: the model shipped in the package)"
    )
    cost = parser.add_mutually_exclusive_group()
    cost.add_argument(
        "--lengths",
        help="per layer, the share of the input's tokens it keeps, one share per layer, non-increasing "
        "(for the 6-layer shipped model e.g. 1,1,0.8,0.6,0.5,0.4), or one share for every layer",
    )
    cost.add_argument(
        "--budget",
        type=float,
        help="the most accurate frontier point within this share of the full FLOPs (0, 1]",
    )
    cost.add_argument(
        "--speedup", type=float, help="the most accurate frontier point at least this much faster (measured)"
    )
    cost.add_argument(
        "--margins",
        help="instead of shares, per layer a margin (or one for all): each window keeps the tokens the "
        "learned selector scores within it of its best one, so easy windows keep fewer; inf keeps all "
        "(e.g. 3 or inf,3,3,3,3,3)",
    )
    parser.add_argument(
        "--shares-only",
        action="store_true",
        help="a --budget or --speedup picks among the frontier's shares only, whose FLOPs are a bound "
        "per window, not its margin points (whose FLOPs are a mean on the held-out questions)",
    )
    parser.add_argument(
        "--selector",
        choices=SELECTORS,
        help="which tokens dropping layers keep: the attention they receive, or the model's learned "
        "selector (default: learned where the model has one)",
    )
    add_dataclass_options(parser, AnswerSettings, names=("batch_size", "max_answer_len"))
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="precision: fp32, bf16 (CPUs with AVX512-BF16 or AMX, and CUDA) or int8 (CPU) "
        "(default: the model's, from its frontier.json; fp32 where it has none or this machine "
        "cannot run it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _run_serve(args: argparse.Namespace) -> None:
    try:
        from .server import run_serve  # the web framework, only when serving
    except ModuleNotFoundError as e:
        raise UsageError(
            f"serve needs the web server's packages, and {e.name or 'one'} is not installed: pip install "
            "fastapi uvicorn pydantic prometheus_client (or reinstall dynamic-tinybert)"
        ) from None
    run_serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynamic-tinybert", description="Extractive question answering with length-adaptive BERT."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    _ask_command(commands)

    evaluate = _file_command(commands, "eval", "official SQuAD 1.1 EM/F1 on a SQuAD-format file")
    evaluate.add_argument("--predictions", type=Path, help="write {id: answer} here (official format)")
    evaluate.set_defaults(run=run_eval)

    predict = _file_command(
        commands, "predict", "answer every question of a SQuAD-format file (gold answers not needed)"
    )
    predict.add_argument(
        "--out",
        required=True,
        type=Path,
        help="write the answers here: {id: answer}, SQuAD's official format (with --top-k K > 1: "
        "{id: [{answer, score, start, end}, ...]}, best first)",
    )
    add_dataclass_options(predict, AnswerSettings, names=("top_k",))
    predict.set_defaults(run=run_predict)

    from .train_settings import TrainSettings

    train = commands.add_parser("train", help="one stage of the training recipe (see train.py)")
    add_dataclass_options(train, TrainSettings)
    train.set_defaults(run=run_train)

    from .search import SearchSettings

    search = commands.add_parser("search", help="the accuracy/cost frontier of length configurations")
    add_dataclass_options(search, SearchSettings)
    search.set_defaults(run=run_search)

    plot = commands.add_parser("plot", help="a PNG of a model's frontier (needs matplotlib)")
    plot.add_argument("--model", required=True, help="a model folder with a frontier.json")
    plot.add_argument("--out", type=Path, required=True, help="the picture to write: .png, .svg or .pdf")
    plot.set_defaults(run=run_plot)

    from .serve_settings import ServeSettings

    serve = commands.add_parser(
        "serve", help="an HTTP API: POST /v1/answer, /healthz, /readyz, /metrics, /docs"
    )
    add_dataclass_options(serve, ServeSettings)
    serve.set_defaults(run=_run_serve)
    return parser


def _ask_command(commands) -> None:
    ask = commands.add_parser("ask", help="answer a question (or several) about a context")
    _common(ask)
    ask.add_argument(
        "--question",
        required=True,
        action="append",
        help="the question to answer from the context; given again, several questions about the same "
        "context, answered in one run",
    )
    source = ask.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the passage to answer from")
    source.add_argument(
        "--context-file", type=Path, help="read the passage from this file (-: from standard input)"
    )
    add_dataclass_options(ask, AnswerSettings, names=("top_k",))
    ask.set_defaults(run=run_ask)


def _file_command(commands, name: str, summary: str) -> argparse.ArgumentParser:
    """A command that runs the model on the questions of a SQuAD-format file."""
    parser = commands.add_parser(name, help=summary)
    _common(parser)
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="SQuAD-format JSON file, or a dataset name for the datasets library (squad:validation)",
    )
    parser.add_argument("--limit", type=int, help="only the first N questions, in file order")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--calibrate",
        type=int,
        metavar="N",
        help="with --budget: run the margin points the budget would pick on N of the file's windows "
        "(spread evenly) and pick by their FLOPs there, not on the held-out questions, so the "
        "budget holds on this text's mean (e.g. 256)",
    )
    return parser


def _argument_text(text: str, option: str, hint: str = "") -> str:
    """A command-line argument as text: Python decodes arguments by the locale, and under an
    ASCII one (LC_ALL=C) keeps the bytes of "Café" as lone surrogates; those bytes read as UTF-8."""
    if is_unicode(text):
        return text
    try:
        return os.fsencode(text).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{option} is not UTF-8 text; give it in UTF-8{hint}") from None


def _load(args: argparse.Namespace):
    if args.shares_only and args.budget is None and args.speedup is None:
        raise UsageError("--shares-only chooses how --budget or --speedup is met: give one of them")
    try:
        AnswerSettings(getattr(args, "top_k", ANSWERS.top_k), args.max_answer_len, args.batch_size).check()
    except AnswerSettingsError as error:
        raise UsageError(error.as_option()) from None
    if args.dtype is not None:
        check_dtype(args.dtype, resolve_device(args.device))  # before the model loads
    qa = QuestionAnswerer.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    lengths = parse_lengths(args.lengths, qa.num_layers) if args.lengths is not None else None
    margins = parse_margins(args.margins, qa.num_layers) if args.margins is not None else None
    lengths, margins, point = qa.choose(
        lengths, args.budget, args.speedup, args.selector, margins, margin_points=not args.shares_only
    )
    return qa, lengths, point, margins


def _read_context(args: argparse.Namespace) -> str:
    """ask's context: --context, or the text of --context-file (-: standard input)."""
    if args.context_file is None:
        return _argument_text(args.context, "--context", hint=" or use --context-file")
    from_stdin = str(args.context_file) == "-"
    name = "standard input" if from_stdin else str(args.context_file)
    try:
        if from_stdin:
            if sys.stdin is None:
                raise UsageError("--context-file -: this command has no standard input")
            return sys.stdin.buffer.read().decode("utf-8")
        return args.context_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--context-file {name} is not UTF-8 text; give it in UTF-8") from None
    except OSError as error:
        raise UsageError(f"cannot read --context-file {name}: {error.strerror or error}") from None


def run_ask(args: argparse.Namespace) -> None:
    context = _read_context(args)
    # several questions are told apart by their numbers: "--question 2 is empty"
    numbered = len(args.question) > 1
    options = [f"--question {n}" if numbered else "--question" for n in range(1, len(args.question) + 1)]
    questions = [
        _argument_text(question, option) for question, option in zip(args.question, options, strict=True)
    ]
    for question, option in zip(questions, options, strict=True):
        if not has_text(question):
            raise UsageError(f"{option} is empty")
    if not has_text(context):
        raise UsageError("the context is empty")
    qa, lengths, point, margins = _load(args)
    answered = qa.answer(
        questions,
        [context] * len(questions),
        args.top_k,
        args.max_answer_len,
        lengths,
        args.batch_size,
        selector=args.selector,
        margins=margins,
    )
    if args.json:
        listed = [[a.to_dict() for a in answers] for answers in answered]
        print(
            json.dumps(
                {
                    "model": str(qa.folder),
                    "lengths": None if margins else _lengths_list(lengths, qa.num_layers),
                    "margins": margins_to_json(margins),
                    "selector": qa.resolve_selector(args.selector),
                    "dtype": qa.dtype,
                    "frontier_point": _point(point),
                    # one question's answers, or for several questions a list of such lists
                    "answers": listed[0] if len(listed) == 1 else listed,
                }
            )
        )
        return
    for question, answers in zip(questions, answered, strict=True):
        if len(questions) > 1:
            print(f"Q: {question}")
        if not answers:
            print("(no answer found in the context)")
        for answer in answers:
            print(f"{answer.text}\t(score {answer.score:.3f}, characters {answer.start}-{answer.end})")


def _check_calibrate(args: argparse.Namespace) -> None:
    if args.calibrate is None:
        return
    if args.budget is None:
        raise UsageError("--calibrate checks how --budget is met on the file's windows: give --budget")
    if args.calibrate < 1:
        raise UsageError(f"--calibrate is a number of windows, 1 or more, got {args.calibrate}")


def run_eval(args: argparse.Namespace) -> None:
    _check_calibrate(args)
    if args.predictions is not None:
        check_output_file(args.predictions, "--predictions", inputs={"--data": args.data})
    examples = _read_questions(args)
    try:
        check_answerable(examples, args.data)
    except SquadFormatError as error:  # a file to answer rather than to score
        raise SquadFormatError(f"{error}, or answer them all with `dynamic-tinybert predict`") from None
    qa, lengths, point, margins = _load(args)
    result = qa.evaluate(examples, **_file_options(args, lengths, margins))
    point = result.point or point
    if args.json:
        scores = {"exact_match": result.exact_match, "f1": result.f1}
        print(json.dumps(scores | _run_report(result, qa, point)), flush=True)
    else:
        print(f"exact match        {result.exact_match:.2f}")
        print(f"F1                 {result.f1:.2f}")
        _print_run(result, qa.num_layers, point, args.budget)
    if args.predictions is not None:  # after the report, which a failed write then does not lose
        _write_json(result.predictions, args.predictions, "--predictions")


def run_predict(args: argparse.Namespace) -> None:
    _check_calibrate(args)
    check_output_file(args.out, "--out", inputs={"--data": args.data})
    examples = _read_questions(args, answers=False)  # gold answers, where there are any, are not read
    qa, lengths, point, margins = _load(args)
    result = qa.predict(examples, top_k=args.top_k, **_file_options(args, lengths, margins))
    point = result.point or point
    if args.top_k == 1:
        answers = result.predictions
    else:
        answers = {qid: [a.to_dict() for a in found] for qid, found in result.answers.items()}
    if args.json:
        print(json.dumps(_run_report(result, qa, point) | {"out": str(args.out)}), flush=True)
    else:
        _print_run(result, qa.num_layers, point, args.budget)
        unanswered = sum(not found for found in result.answers.values())
        said = f'{unanswered} without an answer, written as ""' if unanswered else "every question answered"
        print(f"answers            {args.out}  ({said})", flush=True)
    _write_json(answers, args.out, "--out")  # after the report, which a failed write then does not lose


def _read_questions(args: argparse.Namespace, answers: bool = True) -> list:
    """The questions of --data, the first --limit of them (answers=False: gold answers unread)."""
    check_count(args.limit, "--limit")
    examples = read_examples(args.data, answers)
    if args.limit is not None:
        examples = examples[: args.limit]
    if not examples:
        raise UsageError(f"{args.data} holds no questions")
    return examples


def _file_options(args: argparse.Namespace, lengths, margins) -> dict:
    """How `eval` and `predict` run the model on a file's questions (their options in common):
    what _load chose, or with --calibrate the budget, to be picked again on the file's windows."""
    options = {
        "batch_size": args.batch_size,
        "max_answer_len": args.max_answer_len,
        "progress": not args.quiet,
        "selector": args.selector,
        "lengths": lengths,
        "margins": margins,
    }
    if args.calibrate is not None:
        options |= {
            "lengths": None,
            "margins": None,
            "budget": args.budget,
            "margin_points": not args.shares_only,
            "calibrate": args.calibrate,
        }
    return options


def _write_json(value, path: Path, option: str) -> None:
    """A JSON file the command writes at its end; what the machine refuses (a full disk) says which
    option's file it was, and exits 1."""
    text = json.dumps(value, indent=1, ensure_ascii=False) + "\n"
    try:
        atomic_write(path, lambda target: target.write_text(text, encoding="utf-8"))
    except OSError as error:
        reason = f"{option} could not be written ({error.strerror or error})"
        raise OSError(error.errno, reason, str(path)) from None


def _run_report(result, qa: QuestionAnswerer, point) -> dict:
    """What ran and what it cost, the keys `eval --json` and `predict --json` share."""
    return {
        "questions": result.questions,
        "gflops_per_window": result.gflops_per_window,
        "flops_ratio": result.flops_ratio,
        "seconds": result.seconds,
        "windows": result.windows,
        "gflops_per_window_at_384": result.gflops_per_window_at_384,
        "lengths": None if result.margins else _lengths_list(result.lengths, qa.num_layers),
        "margins": margins_to_json(result.margins),
        "selector": result.selector,
        "dtype": result.dtype,
        "frontier_point": _point(point),
        "calibration": result.calibration.to_dict() if result.calibration else None,
        "model": str(qa.folder),
    }


def _print_run(result, num_layers: int, point, budget: float | None) -> None:
    """`eval`'s and `predict`'s report for people: what ran, on how much, at what cost."""
    print(f"questions          {result.questions}")
    print(f"GFLOPs per window  {result.gflops_per_window:.3f}  (mean over {result.windows} windows)")
    print(f"FLOPs ratio        {result.flops_ratio:.3f}  (of the full model's on these windows)")
    print(f"wall seconds       {result.seconds:.2f}  ({result.dtype})")
    if result.lengths is not None or result.margins is not None:
        print(f"selector           {result.selector}")
    if result.margins is not None:
        shown = format_margins(result.margins, num_layers)
        print(f"margins            {shown}  (GFLOPs measured: the tokens kept)")
    if point is not None:
        mean = " (the held-out mean)" if point.margins is not None else ""
        confirmed = "" if point.confirmed_f1 is None else f" (confirmed: {point.confirmed_f1:.2f})"
        print(
            f"frontier point     {point.label}: held-out F1 {point.heldout_f1:.2f}{confirmed}, "
            f"{point.flops_ratio:.2f} of the full FLOPs{mean}"
        )
    if (calibration := result.calibration) is not None:
        runs = ", ".join(
            f"{p.label} {ratio:.3f} (held-out {p.flops_ratio:.3f})" for p, ratio in calibration.measured
        )
        print(
            f"calibration        {calibration.windows} of the {calibration.of} windows, "
            f"{calibration.seconds:.2f} s: {runs or 'no margin point to run'}"
        )
    if budget is not None and result.flops_ratio > budget + 1e-9:
        if calibration is None:
            why = (
                "a margin point's FLOPs are its mean on the held-out questions; --calibrate N picks "
                "by their mean on N of these windows, --shares-only keeps to the budget in every window"
            )
        else:
            why = (
                f"the calibration measured it on {calibration.windows} of them; a larger --calibrate "
                "measures it more closely, --shares-only keeps to the budget in every window"
            )
        print(
            f"note               these windows cost {result.flops_ratio:.3f} of the full model's FLOPs, "
            f"over the budget {budget:g}: {why}"
        )


def check_output_file(
    path: Path,
    option: str,
    example: str = "predictions.json",
    inputs: dict[str, str | Path] | None = None,
    make_folders: bool = False,
) -> None:
    """A file the command will write at the end: refused now, not after the work, when it cannot
    be, or when it is one of the command's `inputs` ({option: path}), which it would overwrite.
    With make_folders, its missing folders are not refused (atomic_write makes them)."""
    path = Path(path)
    if str(path) == "-":  # read as standard output elsewhere; here it would be a file named "-"
        raise UsageError(
            f"{option} - would write a file named '-'; for standard output give {option} /dev/stdout"
        )
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name, e.g. {path / example}")
    for name, source in (inputs or {}).items():
        if source is not None and path.exists() and path.resolve() == Path(source).resolve():
            raise UsageError(f"{option} {path} is the {name} file; give another file name")
    if written_in_place(path):  # its folder is not written in
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: not writable")
        return
    folder = next(p for p in path.absolute().parents if p.exists())  # the nearest that exists
    if folder != path.absolute().parent and not make_folders:
        raise UsageError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: {folder} is a file, not a folder; give another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def _lengths_list(lengths, num_layers: int) -> list[float]:
    """The configuration that ran, as in the server's responses: a share per layer, all ones for
    the full model."""
    return list(lengths or (1.0,) * num_layers)


def _point(point) -> dict | None:
    """The frontier point a budget picked, as reported in --json output."""
    if point is None:
        return None
    return point.to_dict()


def run_train(args: argparse.Namespace) -> int | None:
    from .train import train
    from .train_settings import TrainSettings

    settings = settings_from(args, TrainSettings)
    if settings.processes > 1 and "WORLD_SIZE" not in os.environ:
        from .processes import launch

        return launch(settings.processes, args.argv)
    print(train(settings))
    return None


def run_search(args: argparse.Namespace) -> None:
    from .search import SearchSettings, search

    search(settings_from(args, SearchSettings))


def run_plot(args: argparse.Namespace) -> None:
    from .checkpoint import resolve
    from .frontier import Frontier
    from .plot import plot_frontier

    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a file name, e.g. {args.out / 'frontier.png'}")
    if args.out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--out {args.out}: give a file name ending in .png (or .svg, .pdf)")
    folder = resolve(args.model)
    frontier = Frontier.load(folder)
    if frontier is None:
        raise UsageError(f"{folder} has no frontier.json; run `dynamic-tinybert search` first")
    print(plot_frontier(frontier, args.out, title=folder.name))


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings meant for the user as one line on stderr; others as Python shows them."""
    if issubclass(category, PrecisionFallback):
        print(f"dynamic-tinybert: note: {message}", file=sys.stderr)
    elif issubclass(category, QuestionCut):
        print(f"dynamic-tinybert: warning: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # text the terminal cannot show comes out escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> int | None:
        with warnings.catch_warnings():
            warnings.showwarning = _note
            return args.run(args)

    return exit_status(f"dynamic-tinybert {args.command}", run)


def exit_status(prog: str, work: Callable[[], object]) -> int:
    """Run a command's work: bad input ends in one line on stderr and exit code 2, what the machine
    refuses in one line and 1, Ctrl-C in "interrupted" and 130 (a training run stopped by Ctrl-C or
    SIGTERM between steps: where its state is, and 130 or 143; the scripts end the same way);
    otherwise work's own status where it returns one (an int: a comparison that failed), else 0."""
    first = os.environ.get("RANK", "0") == "0"  # one of several processes: the first says it for all
    try:
        result = work()
    except USER_ERRORS as error:
        if first:
            print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stopping:  # a training run that stopped between steps says where
        if first:
            print(stopping if isinstance(stopping, Stopped) else "interrupted", file=sys.stderr)
        return stopping.status if isinstance(stopping, Stopped) else 130
    except (OSError, SafetensorError) as error:  # the machine's: a path it cannot write, a full disk
        print(f"{prog}: error: {_machine_error(error)}", file=sys.stderr)
        return EXIT_MACHINE
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _machine_error(error: Exception) -> str:
    """'/ro/out: Read-only file system' rather than '[Errno 30] Read-only file system: '/ro/out''."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror}"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
