"""Saving and resuming: the published checkpoint, and trainer/step-N/, the state a killed run
resumes from (weights, optimizer, each process's random state, and `ResumeState`)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import checkpoint
from .files import replace
from .processes import Processes
from .selector import FILENAME as SELECTOR_FILE
from .stages import unwrap
from .tokenizer import QATokenizer
from .transformers_qa import TransformersQA


@dataclass
class ResumeState:
    """Where a run stands, saved with every trainer state as progress.json."""

    step: int = 0
    best_f1: float | None = None  # the best held-out score so far, and its step
    best_step: int | None = None
    settings: dict = field(default_factory=dict)  # TrainSettings.resume_key() of the run
    finished: bool = False
    total: int | None = None  # the step count --max-minutes fitted, kept by a resumed run
    log_bytes: int | None = None  # metrics.jsonl's length at this state (None: states before it was kept)
    machine: str | None = None  # where it was saved: "cuda, 2 processes" (None: before it was kept)

    @classmethod
    def read(cls, folder: Path) -> ResumeState:
        return cls(**json.loads((folder / "progress.json").read_text()))


class MetricsLog:
    """metrics.jsonl, written by the main process only. A resumed run first cuts it back to what
    was logged up to its saved state (`cut`), so that it reads as one uninterrupted run's log:
    the steps after that state are run, and logged, again."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")

    def size(self) -> int | None:
        return self.path.stat().st_size if self.enabled and self.path.exists() else None

    def cut(self, size: int | None) -> None:
        """Forget what was logged after the first `size` bytes (None: keep everything)."""
        if self.enabled and size is not None and self.path.exists():
            with self.path.open("r+b") as f:
                f.truncate(size)


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


def states(output: Path) -> list[Path]:
    """The trainer states of a run, oldest first (a finished save leaves one)."""
    return sorted((output / "trainer").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_state(output: Path, trainee: nn.Module, optimizer, state: ResumeState, procs: Processes) -> None:
    """trainer/step-N/: weights, optimizer, each process's random state, progress. Written in a
    staging folder and renamed, so that a kill at any moment leaves the previous state whole."""
    trainer = output / "trainer"
    staging = trainer / f".staging-{state.step:08d}"
    if procs.main:
        trainer.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    procs.barrier()
    torch.save(_rng_state(), staging / f"rng-{procs.rank}.pt")
    procs.barrier()
    if procs.main:
        weights = {k: v.detach().cpu().contiguous() for k, v in unwrap(trainee).state_dict().items()}
        save_file(weights, staging / "trainee.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        state.machine = _machine(procs)
        (staging / "progress.json").write_text(json.dumps(asdict(state)))
        replace(staging, trainer / f"step-{state.step:08d}")
        for old in states(output)[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    procs.barrier()


def load_state(folder: Path, trainee: nn.Module, optimizer, procs: Processes) -> ResumeState:
    unwrap(trainee).load_state_dict(load_file(folder / "trainee.safetensors", device=str(procs.device)))
    optimizer.load_state_dict(
        torch.load(folder / "optimizer.pt", map_location=procs.device, weights_only=True)
    )
    rng = folder / f"rng-{procs.rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=True))  # tensors only: loading runs no code
    state = ResumeState.read(folder)
    if procs.main and state.machine not in (None, _machine(procs)):
        print(
            f"{folder.parents[1]}: resuming on {_machine(procs)} a run saved on {state.machine}; "
            "its weights may differ in the last digits from those of a run that never moved",
            file=sys.stderr,
        )
    return state


def _machine(procs: Processes) -> str:
    """What a run's numbers depend on beyond its settings: the device kind and process count."""
    return f"{procs.device.type}, {procs.world} process{'es' if procs.world > 1 else ''}"


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
