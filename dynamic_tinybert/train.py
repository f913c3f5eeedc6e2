"""One training loop for every stage of the recipe (DESIGN.md section 3).

    finetune      span loss on gold answers (the teacher, or a student trained directly)
    intermediate  TinyBERT's intermediate-layer distillation: hidden states (through a learned
                  projection when widths differ) and attention maps, student layer m learning
                  teacher layer m * L_T / L_S
    prediction    prediction-layer distillation: the teacher's start/end distributions
    lengthdrop    LengthDrop: the full model, the smallest configuration and random ones with
                  LayerDrop each step, the sub-models learning the full pass's distributions (and
                  dropping what the model's learned selector drops, where it has one)
    selector      the learned token selector (selector.py), the encoder frozen: each layer's
                  scorer learns where the full model puts its answer

Each stage reads a model folder and writes one: the output folder holds the best checkpoint on
the held-out split in the transformers layout, `metrics.jsonl`, and `trainer/step-N/`, the state
to resume from. Running the same command again after a crash (even SIGKILL) continues from the
last state and ends with the weights an uninterrupted run gets. Under torchrun or
`accelerate launch`, each process takes an equal share of every batch (DistributedDataParallel).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint
from .data import (
    Example,
    answer_matches,
    label_window,
    read_squad,
    refuse_squad_dev,
    split_heldout,
    training_batches,
    write_squad,
)
from .devices import resolve_device
from .distill import attention_loss, hidden_loss, layer_map, prediction_loss, span_loss
from .files import replace
from .lengths import Lengths, constant_ratio, geometric_lengths, sample_layer_skips, sample_lengths
from .model import DynamicBertForQuestionAnswering, QAOutput
from .options import option
from .reader import QuestionAnswerer, collate
from .selector import FILENAME as SELECTOR_FILE
from .selector import SelectorConfig, TokenSelector, answer_region, context_tokens, selector_loss
from .tokenizer import QATokenizer, Window
from .transformers_qa import PROBE_TEXT, TransformersQA, VocabularyError, VocabularyMap

STAGES = ("finetune", "intermediate", "prediction", "lengthdrop", "selector")
NEEDS_TEACHER = ("intermediate", "prediction")


class TrainingError(ValueError):
    """Settings or inputs that cannot be trained on; reported before any training starts."""


@dataclass
class TrainSettings:
    """Every setting of `dynamic-tinybert train`; the command line is built from these fields."""

    stage: str = option(
        "finetune, intermediate, prediction, lengthdrop or selector", choices=STAGES, required=True
    )
    model: str = option("the model folder to start from", required=True)
    data: list[str] = option(
        "SQuAD-format JSON files, or dataset names for `datasets`", nargs="+", required=True
    )
    output: str = option("the folder to write", required=True)
    teacher: str | None = option("teacher model folder (intermediate, prediction; optional for lengthdrop)")
    epochs: float | None = option("passes over the training data (default 2)")
    max_steps: int | None = option("optimizer steps; instead of --epochs")
    batch_size: int = option("examples per optimizer step, over all processes", default=16)
    grad_accum: int = option("split each process's share of a batch into this many passes", default=1)
    lr: float = option("peak learning rate", default=3e-5)
    warmup: float = option("share of the steps with a rising learning rate", default=0.1)
    weight_decay: float = option("AdamW weight decay (not on biases and norms)", default=0.01)
    max_grad_norm: float = option("gradient clipping", default=1.0)
    seed: int = option(
        "seed of the held-out split (keep it across the stages of one recipe), the data order, "
        "initialisation and dropout",
        default=42,
    )
    save_steps: int = option(
        "evaluate on the held-out split and save a resumable state every K steps", default=500
    )
    log_steps: int = option("write training metrics every K steps", default=20)
    heldout: list[str] | None = option(
        "held-out files for selection (default: cut from --data by article)", nargs="+"
    )
    heldout_fraction: float = option("share of each file's articles held out", default=0.05)
    heldout_limit: int = option("held-out questions evaluated at each save", default=1000)
    limit: int | None = option("use only the first N training questions (smoke runs)")
    temperature: float = option("distillation temperature", default=1.0)
    layerdrop: float = option("LengthDrop: probability of leaving a layer out of a sub-model", default=0.2)
    length_ratio: float = option(
        "LengthDrop: least share of the previous layer's tokens a layer keeps", default=0.8
    )
    random_configs: int = option("LengthDrop: random sub-models per step", default=2)
    selector_width: int = option("selector: hidden width of each layer's scorer", default=64)
    selector_radius: float = option(
        "selector: how far (in tokens) the answer region spreads to its neighbours", default=8.0
    )
    selector_share: float = option(
        "selector: checkpoints are selected on held-out F1 with every layer keeping this share", default=0.5
    )
    dropout: float | None = option("override the model's dropout probabilities")
    precision: str = option(
        "auto (bf16 where the hardware has it), fp32 or bf16",
        default="auto",
        choices=("auto", "fp32", "bf16"),
    )
    device: str = option("auto, cpu or cuda", default="auto")
    quiet: bool = option("no progress bar", default=False)

    def smallest_lengths(self, layers: int) -> Lengths | None:
        """LengthDrop's smallest configuration: each layer keeps length_ratio of the previous."""
        return geometric_lengths(self.length_ratio, layers)

    def check(self) -> None:
        if self.stage in NEEDS_TEACHER and not self.teacher:
            raise TrainingError(f"--stage {self.stage} needs --teacher")
        if self.epochs is not None and self.max_steps is not None:
            raise TrainingError("give --epochs or --max-steps, not both")
        for name in ("batch_size", "grad_accum", "save_steps", "log_steps", "heldout_limit"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainingError("--max-steps must be at least 1")
        if not 0 < self.heldout_fraction < 1:
            raise TrainingError("--heldout-fraction must be between 0 and 1")
        if self.selector_width < 1 or self.selector_radius <= 0:
            raise TrainingError("--selector-width and --selector-radius must be positive")
        if not 0 < self.selector_share <= 1:
            raise TrainingError("--selector-share must be in (0, 1]")


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Take the process group down before exit: left to the interpreter's shutdown, gloo's
        threads can abort the process ("terminate called without an active exception")."""
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def start_processes(device: str) -> Processes:
    """One process, or one of several started by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "auto":
        device = resolve_device(device).type
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    target = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(target)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Processes(dist.get_rank() if world > 1 else 0, world, target)


# --- data --------------------------------------------------------------------------------------


def load_examples(source: str) -> list[Example]:
    """A SQuAD-format JSON file, or a dataset name for the `datasets` library ("squad",
    "rajpurkar/squad:train")."""
    path = Path(source)
    if path.exists() or source.endswith(".json"):
        examples = read_squad(path)
        refuse_squad_dev(examples, source)
        return examples
    try:
        from datasets import load_dataset
    except ImportError:
        raise TrainingError(
            f"{source} is not a file; to load a dataset by name, pip install datasets"
        ) from None
    name, _, split = source.partition(":")
    rows = load_dataset(name, split=split or "train")
    return [
        Example(
            str(r["id"]),
            r["question"],
            r["context"],
            tuple(r["answers"]["text"]),
            tuple(r["answers"]["answer_start"]),
            r.get("title", ""),
            paragraph=zlib.crc32(r["context"].encode("utf-8")),  # stable across runs, unlike hash()
        )
        for r in rows
    ]


@dataclass
class TrainingData:
    windows: list[Window]
    starts: np.ndarray  # gold token positions per window; 0 ([CLS]) when the answer is elsewhere
    ends: np.ndarray
    heldout: list[Example]  # the whole held-out split
    skipped: list[str]  # ids of questions whose answer does not match the context


def prepare_data(settings: TrainSettings, tokenizer: QATokenizer) -> TrainingData:
    training, heldout = [], []
    for source in settings.data:
        examples = load_examples(source)
        if settings.heldout:
            training += examples
        else:
            kept, held = split_heldout(examples, settings.heldout_fraction, settings.seed)
            training += kept
            heldout += held
    for source in settings.heldout or []:
        heldout += load_examples(source)
    skipped = [e.id for e in training if not answer_matches(e)]
    training = [e for e in training if answer_matches(e)]
    if settings.limit:
        training = training[: settings.limit]
    if not training:
        raise TrainingError("no training questions left")
    if not heldout:
        raise TrainingError("no held-out questions to select checkpoints on; give --heldout FILE")
    encoded = tokenizer.encode_windows([e.question for e in training], [e.context for e in training])
    windows, starts, ends = [], [], []
    for example, example_windows in zip(training, encoded, strict=True):
        first = example.answer_starts[0]
        for window in example_windows:
            start, end = label_window(
                window.offsets, window.context_mask, first, first + len(example.answers[0])
            )
            windows.append(window)
            starts.append(start)
            ends.append(end)
    return TrainingData(windows, np.array(starts), np.array(ends), heldout, skipped)


def heldout_sample(heldout: list[Example], settings: TrainSettings) -> list[Example]:
    """The held-out questions evaluated at each save: a sample of every file, not the first file's."""
    sample = np.random.default_rng(settings.seed).permutation(len(heldout))[: settings.heldout_limit]
    return [heldout[i] for i in sorted(sample)]


# --- models ------------------------------------------------------------------------------------


def align(student: QATokenizer, teacher_folder: Path) -> VocabularyMap:
    """The map from the student's token ids to the teacher's, checked on real text."""
    from transformers import AutoTokenizer

    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_folder)
    vocabulary = VocabularyMap.between(student.vocabulary, teacher_tokenizer)
    vocabulary.check_same_pieces(
        student.encode_text(PROBE_TEXT), teacher_tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    )
    return vocabulary


def load_teacher(settings: TrainSettings, student_tokenizer: QATokenizer) -> nn.Module | None:
    if not settings.teacher:
        return None
    teacher, tokenizer, folder = checkpoint.load_qa_model(
        settings.teacher, attentions=settings.stage == "intermediate"
    )
    if isinstance(teacher, TransformersQA):
        teacher.vocabulary = align(student_tokenizer, folder)
    elif tokenizer.vocabulary != student_tokenizer.vocabulary:
        raise VocabularyError(f"the teacher {folder} and the student have different vocabularies")
    return teacher.eval().requires_grad_(False)


@dataclass
class StepContext:
    settings: TrainSettings
    teacher: nn.Module | None
    layers: list[int] | None  # teacher layer for each student layer (intermediate)
    rng: np.random.Generator  # this step's randomness (LengthDrop), the same in every process


class Trainee(nn.Module):
    """What the optimizer trains: the model, and in intermediate-layer distillation the
    projection of student hidden states into the teacher's width (never saved with the model).

    Its forward pass is a whole training step's loss, so that DistributedDataParallel sees one
    forward per backward even when LengthDrop runs the model several times.
    """

    def __init__(self, model: nn.Module, projection: nn.Linear | None = None):
        super().__init__()
        self.model = model
        self.projection = projection

    def forward(self, batch: dict[str, Tensor], labels: dict[str, Tensor], ctx: StepContext) -> Tensor:
        return STEPS[ctx.settings.stage](self, batch, labels, ctx)


def set_dropout(model: nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        if hasattr(module, "attn_dropout"):
            module.attn_dropout = p


def freeze_for_selector(model: DynamicBertForQuestionAnswering, width: int) -> None:
    """The selector stage trains the selector alone (a new one where the model has none) on the
    frozen encoder, whose dropout is off: its full pass is the target."""
    if model.selector is None:
        model.selector = TokenSelector(
            SelectorConfig(model.config.hidden_size, model.config.num_hidden_layers, width)
        )
    model.requires_grad_(False)
    model.selector.requires_grad_(True)
    set_dropout(model, 0.0)


# --- the stages --------------------------------------------------------------------------------


def finetune_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    out = trainee.model(**batch)
    return span_loss(
        out.start_logits, out.end_logits, labels["starts"], labels["ends"], batch["attention_mask"].bool()
    )


def intermediate_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    mask = batch["attention_mask"].bool()
    out = trainee.model(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        target = ctx.teacher(**batch, output_hidden_states=True, output_attentions=True)
    loss = 0.0
    for m, t in enumerate(ctx.layers):
        hidden = (
            out.hidden_states[m] if trainee.projection is None else trainee.projection(out.hidden_states[m])
        )
        loss = loss + hidden_loss(hidden, target.hidden_states[t], mask)
        if m > 0:
            loss = loss + attention_loss(out.attentions[m - 1], target.attentions[t - 1], mask)
    return loss


def prediction_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    out = trainee.model(**batch)
    with torch.no_grad():
        target = ctx.teacher(**batch)
    return prediction_loss(out, target, batch["attention_mask"].bool(), ctx.settings.temperature)


def lengthdrop_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    mask = batch["attention_mask"].bool()
    full = trainee.model(**batch, output_attended=trainee.model.selector is not None)
    if ctx.teacher is not None:
        with torch.no_grad():
            teacher = ctx.teacher(**batch)
        loss = prediction_loss(full, teacher, mask, ctx.settings.temperature)
    else:
        loss = span_loss(full.start_logits, full.end_logits, labels["starts"], labels["ends"], mask)
    # in-place distillation: the sub-models learn the full pass's distributions, held fixed
    target = QAOutput(full.start_logits.detach(), full.end_logits.detach())
    layers = len(trainee.model.layers)
    configs = [ctx.settings.smallest_lengths(layers)]
    configs += [
        sample_lengths(ctx.rng, layers, ctx.settings.length_ratio) for _ in range(ctx.settings.random_configs)
    ]
    for lengths in configs:
        skip = sample_layer_skips(ctx.rng, layers, ctx.settings.layerdrop)
        loss = loss + prediction_loss(trainee.model(**batch, lengths=lengths, skip=skip), target, mask)
    if trainee.model.selector is not None:
        # the selector follows the encoder as it changes: it learns from the full pass's states
        loss = loss + _selector_loss(trainee.model, batch, full, ctx.settings)
    return loss


def selector_step(trainee: Trainee, batch, labels, ctx: StepContext) -> Tensor:
    with torch.no_grad():  # the encoder is frozen: its full pass gives the states and the targets
        full = trainee.model(**batch, output_attended=True)
    return _selector_loss(trainee.model, batch, full, ctx.settings)


def _selector_loss(
    model: DynamicBertForQuestionAnswering, batch, full: QAOutput, settings: TrainSettings
) -> Tensor:
    """Each layer's scorer, on the full pass's post-attention states, against where the full
    pass puts its answer (selector.answer_region); the mean over layers."""
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    question = real & ~context
    target = answer_region(
        full.start_logits.detach(), full.end_logits.detach(), context, radius=settings.selector_radius
    )
    losses = [
        selector_loss(model.selector(i, states.detach(), question, real), target, context)
        for i, states in enumerate(full.attended)
    ]
    return torch.stack(losses).mean()


STEPS = {
    "finetune": finetune_step,
    "intermediate": intermediate_step,
    "prediction": prediction_step,
    "lengthdrop": lengthdrop_step,
    "selector": selector_step,
}


def _unwrap(trainee: nn.Module) -> Trainee:
    """The Trainee inside DistributedDataParallel, or itself."""
    return trainee.module if isinstance(trainee, nn.parallel.DistributedDataParallel) else trainee


def compose_head(
    model: DynamicBertForQuestionAnswering, teacher: nn.Module, projection: nn.Linear | None
) -> None:
    """After intermediate-layer distillation, the student's QA head becomes the teacher's head
    applied to projected student states: logits = W_t (P h + b_P) + b_t. Where the student
    matches the teacher, it then answers as the teacher does, a good start for the next stage."""
    head = teacher.head() if isinstance(teacher, TransformersQA) else getattr(teacher, "qa_head", None)
    if head is None:
        return
    with torch.no_grad():
        weight, bias = head.weight.float(), head.bias.float()
        if projection is not None:
            weight, bias = weight @ projection.weight.float(), weight @ projection.bias.float() + bias
        model.qa_head.weight.copy_(weight)
        model.qa_head.bias.copy_(bias)


# --- saving and resuming -----------------------------------------------------------------------


def publish(model: nn.Module, tokenizer: QATokenizer, output: Path) -> None:
    """Write the model into the output folder in the transformers layout, one file at a time,
    each renamed into place, so that the folder always loads."""
    staging = Path(tempfile.mkdtemp(prefix=".model.", dir=output))
    try:
        folder = staging / "model"
        if isinstance(model, TransformersQA):
            folder.mkdir()
            model.save(folder)
            tokenizer.save(folder)
        else:
            checkpoint.save(model, tokenizer, folder)
        # a stale weights file of another format would be read first; a stale selector would be used
        for name in (*checkpoint.WEIGHT_FILES, SELECTOR_FILE):
            if (output / name).exists() and not (folder / name).exists():
                (output / name).unlink()
        for item in folder.iterdir():
            if item.is_file():
                replace(item, output / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _states(output: Path) -> list[Path]:
    return sorted((output / "trainer").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_state(
    output: Path, trainee: nn.Module, optimizer, step: int, progress: dict, procs: Processes
) -> None:
    """trainer/step-N/: weights, optimizer, each process's random state, progress. Written in a
    staging folder and renamed, so that a kill at any moment leaves the previous state whole."""
    trainer = output / "trainer"
    staging = trainer / f".staging-{step:08d}"
    if procs.main:
        trainer.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    procs.barrier()
    torch.save(_rng_state(), staging / f"rng-{procs.rank}.pt")
    procs.barrier()
    if procs.main:
        state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(trainee).state_dict().items()}
        save_file(state, staging / "trainee.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "progress.json").write_text(json.dumps({"step": step, **progress}))
        replace(staging, trainer / f"step-{step:08d}")
        for old in _states(output)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    procs.barrier()


def load_state(folder: Path, trainee: nn.Module, optimizer, procs: Processes) -> dict:
    _unwrap(trainee).load_state_dict(load_file(folder / "trainee.safetensors", device=str(procs.device)))
    optimizer.load_state_dict(
        torch.load(folder / "optimizer.pt", map_location=procs.device, weights_only=True)
    )
    rng = folder / f"rng-{procs.rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((folder / "progress.json").read_text())


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the loop ----------------------------------------------------------------------------------


def _optimizer(trainee: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for parameter in trainee.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr)


def learning_rate(step: int, total: int, settings: TrainSettings) -> float:
    """Linear warm-up to the peak, then linear decay to zero at the last step."""
    warmup = round(settings.warmup * total)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (total - step) / max(1, total - warmup))


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX): autocast then trains about
    1.5x faster than fp32 (measured on a Zen 4 core: 13 against 9 examples a second)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _settings_key(settings: TrainSettings) -> dict:
    """The settings a resumed run must share with the run it continues."""
    keep = ("stage", "model", "data", "teacher", "epochs", "max_steps", "batch_size", "lr", "seed", "limit")
    if settings.stage == "selector":
        keep += ("selector_width", "selector_radius")
    return {k: getattr(settings, k) for k in keep}


def train(settings: TrainSettings) -> Path:
    """Run (or resume) one stage; returns the output folder."""
    settings.check()
    procs = start_processes(settings.device)
    try:
        return _run_stage(settings, procs)
    finally:
        procs.close()


def _run_stage(settings: TrainSettings, procs: Processes) -> Path:
    output = Path(settings.output)
    states = _states(output) if output.exists() else []
    if states:
        progress = json.loads((states[-1] / "progress.json").read_text())
        if progress.get("settings") != json.loads(json.dumps(_settings_key(settings))):
            raise TrainingError(
                f"{output} holds a run with other settings; give another --output or remove it"
            )
        if progress.get("finished"):
            if procs.main:
                print(f"{output}: this run has already finished", file=sys.stderr)
            return output

    torch.manual_seed(settings.seed)
    model, tokenizer, _ = checkpoint.load_qa_model(settings.model)
    if settings.stage != "finetune" and not isinstance(model, DynamicBertForQuestionAnswering):
        raise TrainingError(f"--stage {settings.stage} trains a BERT student; {settings.model} is not one")
    teacher = load_teacher(settings, tokenizer)
    if settings.dropout is not None:
        set_dropout(model, settings.dropout)
    if settings.stage == "selector":
        freeze_for_selector(model, settings.selector_width)
    data = prepare_data(settings, tokenizer)
    projection, layers = None, None
    if settings.stage == "intermediate":
        layers = layer_map(model.config.num_hidden_layers, teacher.config.num_hidden_layers)
        if teacher.config.hidden_size != model.config.hidden_size:
            projection = nn.Linear(model.config.hidden_size, teacher.config.hidden_size)
    trainee = Trainee(model, projection).to(procs.device).train()
    if teacher is not None:
        teacher.to(procs.device)
    optimizer = _optimizer(trainee, settings)
    progress = {"best_f1": None, "best_step": None}
    if states:
        progress = load_state(states[-1], trainee, optimizer, procs)
    step = progress.get("step", 0)
    if procs.world > 1:
        # intermediate-layer distillation leaves the QA head out of the loss
        trainee = nn.parallel.DistributedDataParallel(
            trainee, find_unused_parameters=settings.stage == "intermediate"
        )

    per_epoch = len(training_batches([len(w) for w in data.windows], settings.batch_size, settings.seed, 0))
    if per_epoch == 0:
        raise TrainingError(
            f"fewer training windows ({len(data.windows)}) than --batch-size {settings.batch_size}"
        )
    total = settings.max_steps or math.ceil((settings.epochs or 2.0) * per_epoch)
    if settings.batch_size % (procs.world * settings.grad_accum):
        raise TrainingError("--batch-size must divide evenly over processes and --grad-accum passes")
    log = _Log(output / "metrics.jsonl", procs.main)
    heldout = heldout_sample(data.heldout, settings)
    if procs.main and step == 0:
        output.mkdir(parents=True, exist_ok=True)
        # the split that selects checkpoints, for the search to select length configurations on
        write_squad(data.heldout, output / "heldout.json")
        log.write(
            {
                "event": "start",
                "settings": dataclasses.asdict(settings),
                "windows": len(data.windows),
                "heldout_questions": len(heldout),
                "steps": total,
            }
        )
        if data.skipped:
            log.write(
                {
                    "event": "skipped",
                    "reason": "answer text does not match the context at answer_start",
                    "count": len(data.skipped),
                    "ids": data.skipped,
                }
            )
            print(
                f"skipped {len(data.skipped)} questions whose answer does not match the context "
                f"(ids in {output / 'metrics.jsonl'})",
                file=sys.stderr,
            )

    bf16 = use_bf16(settings.precision, procs.device)
    bar = tqdm(
        total=total, initial=step, disable=settings.quiet or not procs.main, unit="step", dynamic_ncols=True
    )
    seen, began = 0, time.perf_counter()
    epoch_batches, epoch_of = None, None
    while step < total:
        epoch, index = divmod(step, per_epoch)
        if epoch != epoch_of:
            epoch_batches = training_batches(
                [len(w) for w in data.windows], settings.batch_size, settings.seed, epoch
            )
            epoch_of = epoch
        ctx = StepContext(settings, teacher, layers, np.random.default_rng([settings.seed, step]))
        loss = _optimizer_step(
            trainee,
            optimizer,
            epoch_batches[index],
            data,
            ctx,
            procs,
            bf16,
            learning_rate(step, total, settings),
        )
        step += 1
        seen += settings.batch_size
        bar.update(1)
        if step % settings.log_steps == 0 or step == total:
            rate = seen / (time.perf_counter() - began)
            bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{rate:.1f}")
            log.write(
                {
                    "step": step,
                    "epoch": step / per_epoch,
                    "loss": loss,
                    "lr": learning_rate(step - 1, total, settings),
                    "examples_per_s": rate,
                }
            )
        if step % settings.save_steps == 0 or step == total:
            if settings.stage == "intermediate":
                compose_head(_unwrap(trainee).model, teacher, projection)
            _evaluate_and_publish(
                _unwrap(trainee).model, tokenizer, heldout, output, step, progress, procs, log, settings
            )
            progress.update(settings=_settings_key(settings), finished=step == total)
            save_state(output, trainee, optimizer, step, progress, procs)
    bar.close()
    _check_ranks_agree(trainee, procs, log)
    return output


def _optimizer_step(trainee, optimizer, batch_ids, data, ctx, procs, bf16, lr) -> float:
    """One update on one global batch: this process's share, in grad_accum passes."""
    share = batch_ids[procs.rank :: procs.world]
    passes = np.array_split(np.array(share), ctx.settings.grad_accum)
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for i, ids in enumerate(passes):
        windows = [data.windows[j] for j in ids]
        batch = collate(windows, procs.device)
        labels = {
            "starts": torch.from_numpy(data.starts[ids]).to(procs.device),
            "ends": torch.from_numpy(data.ends[ids]).to(procs.device),
        }
        sync = i == len(passes) - 1 or not hasattr(trainee, "no_sync")
        with (
            nullcontext() if sync else trainee.no_sync(),
            torch.autocast(procs.device.type, torch.bfloat16, enabled=bf16),
        ):
            loss = trainee(batch, labels, ctx) * (len(ids) / len(share))
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(trainee.parameters(), ctx.settings.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _evaluate_and_publish(model, tokenizer, heldout, output, step, progress, procs, log, settings) -> None:
    """Held-out EM/F1 (main process); the best checkpoint so far goes into the output folder."""
    if procs.main:
        score, record = heldout_scores(
            QuestionAnswerer(model, tokenizer, device=procs.device), heldout, settings
        )
        model.train()
        if progress["best_f1"] is None or score > progress["best_f1"]:
            progress.update(best_f1=score, best_step=step)
            publish(model, tokenizer, output)
        record |= {"best_f1": progress["best_f1"], "best_step": progress["best_step"]}
        log.write({"step": step, **record})
    procs.barrier()


def heldout_scores(
    qa: QuestionAnswerer, heldout: list[Example], settings: TrainSettings
) -> tuple[float, dict]:
    """The score checkpoints are compared on, and the record for the log.

    The full model's F1; for LengthDrop, whose purpose is the sub-models, the mean F1 of the
    full model and the smallest configuration; for the selector, which leaves the full model as
    it is, the F1 with every layer keeping --selector-share."""
    if settings.stage == "selector":
        lengths = constant_ratio(settings.selector_share, qa.num_layers)
        result = qa.evaluate(heldout, lengths=lengths, batch_size=64, selector="learned")
        return result.f1, {
            "heldout_exact_match_selector": result.exact_match,
            "heldout_f1_selector": result.f1,
        }
    result = qa.evaluate(heldout, batch_size=64)
    record = {"heldout_exact_match": result.exact_match, "heldout_f1": result.f1}
    if settings.stage != "lengthdrop":
        return result.f1, record
    small = qa.evaluate(heldout, lengths=settings.smallest_lengths(qa.num_layers), batch_size=64)
    score = (result.f1 + small.f1) / 2
    return score, record | {"heldout_f1_smallest": small.f1, "selection_f1": score}


def _check_ranks_agree(trainee: nn.Module, procs: Processes, log) -> None:
    """Every process must end with the same weights; say so in the log."""
    if procs.world == 1:
        return
    total = torch.stack([p.detach().double().sum() for p in trainee.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(procs.world)]
    dist.all_gather(gathered, total)
    agree = all(torch.equal(g, gathered[0]) for g in gathered)
    log.write(
        {"event": "ranks", "world": procs.world, "agree": agree, "checksums": [float(g) for g in gathered]}
    )
    if not agree:
        raise RuntimeError(f"processes ended with different weights: {[float(g) for g in gathered]}")


class _Log:
    """metrics.jsonl, written by the main process only."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
