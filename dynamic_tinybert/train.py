"""One training loop for every stage of the recipe (docs/method.md, "The training recipe").

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
last state and ends with the weights an uninterrupted run gets; Ctrl-C or SIGTERM saves the state
of the step in progress first (stopping.py). Under torchrun or
`accelerate launch`, each process takes an equal share of every batch (DistributedDataParallel).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint
from .data import Example, collate, training_batches, write_squad
from .model import DynamicBertForQuestionAnswering
from .optimizer import adamw, learning_rate
from .processes import Processes, check_ranks_agree, start_processes, use_bf16
from .reader import QuestionAnswerer
from .resume import MetricsLog, ResumeState, load_state, publish, save_state, states
from .stages import (
    StepContext,
    Trainee,
    compose_head,
    freeze_for_selector,
    intermediate_targets,
    load_teacher,
    set_dropout,
    unwrap,
)
from .stopping import stop_requests, stopped
from .time_limit import TimeLimit
from .tokenizer import QATokenizer
from .train_data import TrainingData, heldout_sample, heldout_scores, prepare_data
from .train_settings import TrainingError, TrainSettings

# --- the loop ----------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run of a stage works with, built once by `_build`."""

    settings: TrainSettings
    procs: Processes
    output: Path
    tokenizer: QATokenizer
    teacher: nn.Module | None
    trainee: nn.Module  # a Trainee, or the DistributedDataParallel around it
    projection: nn.Linear | None
    layers: list[int] | None  # teacher layer of each student layer (intermediate)
    optimizer: torch.optim.Optimizer
    data: TrainingData
    heldout: list[Example]  # the sample evaluated at each save
    state: ResumeState
    per_epoch: int
    total: int
    log: MetricsLog
    limit: TimeLimit | None = None  # --max-minutes

    @property
    def model(self) -> nn.Module:
        return unwrap(self.trainee).model


def train(settings: TrainSettings) -> Path:
    """Run (or resume) one stage; returns the output folder."""
    settings.check()
    if settings.processes > 1 and "WORLD_SIZE" not in os.environ:
        raise TrainingError("processes > 1 are started by `dynamic-tinybert train --processes`, or torchrun")
    started = time.monotonic()
    procs = start_processes(settings.device)
    try:
        # the run (its DistributedDataParallel model holds the process group) is gone when
        # _train returns, before the group is taken down
        return _train(settings, procs, started)
    finally:
        procs.close()


def _train(settings: TrainSettings, procs: Processes, started: float) -> Path:
    output = Path(settings.output)
    if _finished(output, settings, procs):
        return output
    run = _build(settings, procs, output)
    if settings.max_minutes:
        run.limit = TimeLimit(started + 60 * settings.max_minutes, settings.planned_steps(run.per_epoch))
    _start_log(run)
    _loop(run)
    check_ranks_agree(run.trainee, procs, run.log.write)
    return output


def _finished(output: Path, settings: TrainSettings, procs: Processes) -> bool:
    """Whether the output folder holds this run, finished; a run of other settings is refused."""
    saved = states(output) if output.exists() else []
    if not saved:
        return False
    state = ResumeState.read(saved[-1])
    differences = settings.resume_differences(state.settings)
    if differences:
        raise TrainingError(
            f"--output {output} holds a run with other settings ({'; '.join(differences)}): run it with "
            "its own settings to resume it, or give another --output for a new run"
        )
    if state.finished and procs.main:
        print(f"{output}: this run has already finished", file=sys.stderr)
    return state.finished


def _build(settings: TrainSettings, procs: Processes, output: Path) -> Run:
    """The models, data and optimizer of a run, at its last saved state if it has one."""
    torch.manual_seed(settings.seed)
    model, tokenizer, _ = checkpoint.load_qa_model(settings.model)
    if settings.stage != "finetune" and not isinstance(model, DynamicBertForQuestionAnswering):
        raise TrainingError(f"--stage {settings.stage} trains a BERT student; {settings.model} is not one")
    teacher = load_teacher(settings, tokenizer)
    set_dropout(model, settings.dropout, settings.attention_dropout)
    if settings.stage == "selector":
        freeze_for_selector(model, settings)
    projection, layers = intermediate_targets(model, teacher, settings)
    data = prepare_data(settings, tokenizer)
    trainee = Trainee(model, projection).to(procs.device).train()
    if teacher is not None:
        teacher.to(procs.device)
    optimizer = adamw(trainee, settings)
    saved = states(output) if output.exists() else []
    state = load_state(saved[-1], trainee, optimizer, procs) if saved else ResumeState()
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
    if settings.batch_size % (procs.world * settings.grad_accum):
        raise TrainingError("--batch-size must divide evenly over processes and --grad-accum passes")
    total = state.total or settings.planned_steps(per_epoch)
    heldout = heldout_sample(data.heldout, settings)
    log = MetricsLog(output / "metrics.jsonl", procs.main)
    return Run(
        settings,
        procs,
        output,
        tokenizer,
        teacher,
        trainee,
        projection,
        layers,
        optimizer,
        data,
        heldout,
        state,
        per_epoch,
        total,
        log,
    )


def _start_log(run: Run) -> None:
    """A new run writes its held-out split (for the search to select on) and its settings; a
    resumed one forgets what it logged after its saved state, whose steps it runs again."""
    if not run.procs.main:
        return
    run.log.cut(run.state.log_bytes if run.state.step > 0 else 0)
    if run.state.step > 0:
        return
    run.output.mkdir(parents=True, exist_ok=True)
    write_squad(run.data.heldout, run.output / "heldout.json")
    run.log.write(
        {
            "event": "start",
            "settings": dataclasses.asdict(run.settings),
            "windows": len(run.data.windows),
            "heldout_questions": len(run.heldout),
            "steps": run.total,
        }
    )
    skipped = run.data.skipped
    if skipped:
        reason = "no gold answer, or the answer's text is not in the context at its answer_start"
        run.log.write({"event": "skipped", "reason": reason, "count": len(skipped), "ids": skipped})
        print(
            f"skipped {len(skipped)} questions with {reason} (ids in {run.output / 'metrics.jsonl'})",
            file=sys.stderr,
        )


def _loop(run: Run) -> None:
    """Optimizer steps from the saved one to the last: logging every log_steps, evaluating,
    publishing the best and saving a resumable state every save_steps. Ctrl-C or SIGTERM stops
    the run after the step it is in, its state saved there (stopping.py)."""
    settings, state = run.settings, run.state
    bf16 = use_bf16(settings.precision, run.procs.device)
    bar = tqdm(
        total=run.total,
        initial=state.step,
        disable=settings.quiet or not run.procs.main,
        unit="step",
        dynamic_ncols=True,
    )
    seen, began, epoch_of, batches = 0, time.perf_counter(), None, None
    lengths = [len(w) for w in run.data.windows]
    first = state.step
    with stop_requests(run.procs) as stop:
        while state.step < run.total:
            epoch, index = divmod(state.step, run.per_epoch)
            if epoch != epoch_of:
                batches = training_batches(lengths, settings.batch_size, settings.seed, epoch)
                epoch_of = epoch
            ctx = StepContext(
                settings, run.teacher, run.layers, np.random.default_rng([settings.seed, state.step])
            )
            lr = learning_rate(state.step, run.total, settings)
            loss = _optimizer_step(run, batches[index], ctx, bf16, lr)
            state.step += 1
            seen += settings.batch_size
            if run.limit is not None:
                total, record = run.limit.step_count(state.step, state.step - first, run.total)
                run.total = bar.total = run.procs.from_main(total)
                if record:
                    state.total = run.total
                    run.log.write(record)
            bar.update(1)
            if state.step % settings.log_steps == 0 or state.step == run.total:
                rate = seen / (time.perf_counter() - began)
                bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{rate:.1f}")
                record = {"step": state.step, "epoch": state.step / run.per_epoch, "loss": loss, "lr": lr}
                run.log.write(record | {"examples_per_s": rate})
            saved = state.step % settings.save_steps == 0 or state.step == run.total
            if saved:
                _save(run, loss, evaluate=True)
            signum = stop.agreed()
            if signum and state.step < run.total:
                if not saved:
                    _save(run, loss, evaluate=False)
                bar.close()
                raise stopped(signum, state.step, run.output / "trainer")
    bar.close()


def _save(run: Run, loss: float, evaluate: bool) -> None:
    """A resumable state at this step; at a save step, first the held-out evaluation, which
    publishes the checkpoint if it is the best so far. A state saved between save steps, for a
    run that stops there, resumes to the weights an uninterrupted run gets: it leaves out only
    the evaluation and (intermediate) the head composed for it, which no step trains."""
    state = run.state
    if evaluate and run.settings.stage == "intermediate":
        compose_head(run.model, run.teacher, run.projection)
    _check_finite(run, state.step, loss, all(p.isfinite().all() for p in run.model.parameters()))
    if evaluate:
        _evaluate_and_publish(run)
    state.settings, state.finished = run.settings.resume_key(), state.step == run.total
    state.log_bytes = run.log.size()
    save_state(run.output, run.trainee, run.optimizer, state, run.procs)


def _optimizer_step(run: Run, batch_ids, ctx: StepContext, bf16: bool, lr: float) -> float:
    """One update on one global batch: this process's share, in grad_accum passes."""
    procs, data, trainee = run.procs, run.data, run.trainee
    share = batch_ids[procs.rank :: procs.world]
    passes = np.array_split(np.array(share), ctx.settings.grad_accum)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for i, ids in enumerate(passes):
        batch = collate([data.windows[j] for j in ids], procs.device)
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
    norm = torch.nn.utils.clip_grad_norm_(trainee.parameters(), ctx.settings.max_grad_norm)
    _check_finite(run, run.state.step + 1, total, bool(norm.isfinite()))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total


def _check_finite(run: Run, step: int, loss: float, finite: bool) -> None:
    """A loss, gradient or weight that is no longer a number stops the run before the weights
    take it in or are published (the norm of the synchronised gradients stops every process
    alike), keeping the checkpoint and the state saved last."""
    if finite and math.isfinite(loss):
        return
    saved = states(run.output) if run.output.exists() else []
    kept = f"{run.output} keeps its state of step {int(saved[-1].name[5:])}" if saved else "nothing was saved"
    raise TrainingError(
        f"training diverged at step {step}: the loss is {loss} and the weights or gradients are not finite; "
        f"{kept}: train again with a lower --lr (it was {run.settings.lr}) and another --output"
    )


def _evaluate_and_publish(run: Run) -> None:
    """Held-out EM/F1 (main process); the best checkpoint so far goes into the output folder."""
    state = run.state
    if run.procs.main:
        model = run.model
        qa = QuestionAnswerer(model, run.tokenizer, device=run.procs.device)
        score, record = heldout_scores(qa, run.heldout, run.settings)
        model.train()
        if state.best_f1 is None or score > state.best_f1:
            state.best_f1, state.best_step = score, state.step
            publish(model, run.tokenizer, run.output)
        run.log.write({"step": state.step, **record, "best_f1": state.best_f1, "best_step": state.best_step})
    run.procs.barrier()
