"""The settings of `dynamic-tinybert train`, declared once: the command line, the checks and the
resume key are built from them (train.py runs them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .lengths import LENGTHDROP_RATIO, Lengths, geometric_lengths
from .options import check_output_folder, option

STAGES = ("finetune", "intermediate", "prediction", "lengthdrop", "selector")
NEEDS_TEACHER = ("intermediate", "prediction")


class TrainingError(ValueError):
    """Settings or inputs that cannot be trained on; reported before any training starts."""


# the numeric options' ranges: (least, whether it is allowed, most, whether it is allowed); None: unbounded
_RANGES = {
    "epochs": (0, False, None, False),
    "max_steps": (1, True, None, False),
    "max_minutes": (0, False, None, False),
    "batch_size": (1, True, None, False),
    "grad_accum": (1, True, None, False),
    "lr": (0, False, None, False),
    "warmup": (0, True, 1, False),
    "weight_decay": (0, True, None, False),
    "max_grad_norm": (0, False, None, False),
    "seed": (0, True, 2**32 - 1, True),  # numpy refuses negative seeds; 32 bits, as seeds usually are
    "save_steps": (1, True, None, False),
    "log_steps": (1, True, None, False),
    "processes": (1, True, None, False),
    "heldout_fraction": (0, False, 1, False),
    "heldout_limit": (1, True, None, False),
    "limit": (1, True, None, False),
    "temperature": (0, False, None, False),
    "layerdrop": (0, True, 1, False),
    "length_ratio": (0, False, 1, True),
    "random_configs": (0, True, None, False),
    "selector_width": (1, True, None, False),
    "selector_radius": (0, False, None, False),
    "selector_cascade": (0, True, None, False),
    "selector_share": (0, False, 1, True),
    "selector_dropout": (0, True, 1, False),
    "dropout": (0, True, 1, False),
    "attention_dropout": (0, True, 1, False),
}

# the settings that change what a run computes (its weights, its held-out split, the checkpoint it
# publishes), which a resumed run must share with the run it continues: all stages', then each
# stage's own. Logging, --max-minutes (a resumed run keeps the step count it fitted), --device and
# --quiet may differ.
_RESULT = (
    "stage",
    "model",
    "data",
    "teacher",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "lr",
    "warmup",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "save_steps",
    "heldout",
    "heldout_fraction",
    "heldout_limit",
    "limit",
    "dropout",
    "attention_dropout",
    "precision",
)
_STAGE_RESULT = {
    "finetune": (),
    "intermediate": (),
    "prediction": ("temperature",),
    "lengthdrop": ("temperature", "layerdrop", "length_ratio", "random_configs"),
    "selector": (
        "selector_width",
        "selector_radius",
        "selector_cascade",
        "length_ratio",
        "selector_share",
        "selector_layers",
        "selector_dropout",
        "selector_fresh",
    ),
}
_PATHS = ("model", "data", "teacher", "heldout")


def _within(value: float, low: float, low_ok: bool, high: float | None, high_ok: bool) -> bool:
    """
    >>> _within(0, 0, True, 1, False), _within(1, 0, True, 1, False), _within(-1e-9, 0, False, None, False)
    (True, False, False)
    >>> _within(float("inf"), 0, False, None, False), _within(float("nan"), 0, True, 1, False)
    (False, False)
    """
    above = value >= low if low_ok else value > low
    below = high is None or (value <= high if high_ok else value < high)
    return above and below and math.isfinite(value)


def _range_text(low: float, low_ok: bool, high: float | None, high_ok: bool) -> str:
    """
    >>> _range_text(0, True, 1, False), _range_text(0, False, None, False)
    ('from 0 to below 1', 'above 0')
    """
    start = f"from {low}" if low_ok else f"above {low}"
    if high is None:
        return start if not low_ok else f"at least {low}"
    return f"{start} to {high}" if high_ok else f"{start} to below {high}"


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
    max_minutes: float | None = option(
        "finish within this many minutes: after a few steps the run fits its step count, and so its "
        "learning-rate schedule, into the time left (a fixed accelerator lease)"
    )
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
        "LengthDrop and --selector-cascade: least share of the previous layer's tokens a layer keeps",
        default=LENGTHDROP_RATIO,
    )
    random_configs: int = option("LengthDrop: random sub-models per step", default=2)
    selector_width: int = option("selector: hidden width of each layer's scorer", default=64)
    selector_radius: float = option(
        "selector: how far (in tokens) the answer region spreads to its neighbours", default=8.0
    )
    selector_cascade: int = option(
        "selector: random sub-models per step on whose own cascade the scorers learn too "
        "(0: the full pass's states only)",
        default=0,
    )
    selector_share: float = option(
        "selector: checkpoints are selected on held-out F1 where every layer drops tokens, each keeping "
        "a fixed share of what the previous one kept, this share of them on average",
        default=0.5,
    )
    selector_layers: list[int] | None = option(
        "selector: train only these layers' scorers (1-based), the others stay as they are",
        nargs="+",
    )
    selector_dropout: float = option("selector: dropout on each scorer's hidden layer", default=0.0)
    selector_fresh: bool = option(
        "selector: start the scorers it trains (--selector-layers, default all) from a new "
        "initialisation instead of the model's",
        default=False,
    )
    dropout: float | None = option("override the model's dropout probabilities")
    attention_dropout: float | None = option(
        "override the dropout of the attention probabilities alone (default: --dropout, else the "
        "model's); 0 lets torch's fused attention kernel train on the CPU, where with dropout it falls "
        "back to one that writes out every attention matrix (benchmarks/train_step.py)"
    )
    precision: str = option(
        "auto (bf16 where the hardware has it), fp32 or bf16",
        default="auto",
        choices=("auto", "fp32", "bf16"),
    )
    device: str = option("auto, cpu or cuda", default="auto")
    processes: int = option(
        "processes on this machine, started through torchrun (DistributedDataParallel, a GPU each "
        "where there are GPUs); the command started under torchrun or accelerate launch takes theirs",
        default=1,
    )
    quiet: bool = option("no progress bar", default=False)

    def planned_steps(self, per_epoch: int) -> int:
        """The optimizer steps --max-steps or --epochs ask for (--max-minutes may fit fewer)."""
        return self.max_steps or math.ceil((2.0 if self.epochs is None else self.epochs) * per_epoch)

    def smallest_lengths(self, layers: int) -> Lengths | None:
        """LengthDrop's smallest configuration: each layer keeps length_ratio of the previous."""
        return geometric_lengths(self.length_ratio, layers)

    def check(self) -> None:
        if self.stage in NEEDS_TEACHER and not self.teacher:
            raise TrainingError(f"--stage {self.stage} needs --teacher")
        if self.teacher and self.stage in ("finetune", "selector"):
            raise TrainingError(
                f"--teacher is an option of --stage intermediate, prediction and lengthdrop; "
                f"--stage {self.stage} learns without one: leave --teacher out"
            )
        if self.epochs is not None and self.max_steps is not None:
            raise TrainingError("give --epochs or --max-steps, not both")
        if self.selector_layers is not None and self.stage != "selector":
            raise TrainingError("--selector-layers is an option of --stage selector")
        if self.selector_layers is not None and min(self.selector_layers) < 1:
            raise TrainingError("--selector-layers counts layers from 1")
        for name, bounds in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not _within(value, *bounds):
                raise TrainingError(f"--{name.replace('_', '-')} must be {_range_text(*bounds)}, got {value}")
        check_output_folder(self.output, "--output", TrainingError)
        for name in ("model", "teacher"):
            start = getattr(self, name)
            if self.output and start and Path(self.output).resolve() == Path(start).resolve():
                raise TrainingError(
                    f"--output {self.output} is the --{name} folder, which the run would overwrite; "
                    "give another --output"
                )

    def resume_key(self) -> dict:
        """The settings a resumed run must share with the run it continues (paths resolved), as
        saved in its progress.json."""
        keep = _RESULT + _STAGE_RESULT[self.stage]
        if self.heldout:  # the held-out files replace the split cut from --data
            keep = tuple(k for k in keep if k != "heldout_fraction")
        key = {k: _resolved(getattr(self, k)) if k in _PATHS else getattr(self, k) for k in keep}
        return json.loads(json.dumps(key))

    def resume_differences(self, saved: dict) -> list[str]:
        """The settings in which this run differs from a saved run's key, each with its two
        values. A setting the saved key lacks (a run saved before it was recorded) is not compared.

        >>> run = TrainSettings(stage="finetune", model="m", data=["d"], output="o")
        >>> run.resume_differences(run.resume_key() | {"lr": 0.1, "stage": "prediction"})
        ['--stage prediction there, finetune now', '--lr 0.1 there, 3e-05 now']
        """
        ours = self.resume_key()
        differences = []
        for name, value in ours.items():
            if name not in saved:
                continue
            before = _resolved(saved[name]) if name in _PATHS else saved[name]
            if before != value:
                flag = "--" + name.replace("_", "-")
                differences.append(f"{flag} {_shown(before)} there, {_shown(value)} now")
        return differences


def _resolved(value):
    """A path given on the command line, resolved where it names a file or folder (so that tiny,
    ./tiny and /abs/tiny are one setting); dataset and Hub names stay as they are."""
    if isinstance(value, (list, tuple)):
        return [_resolved(v) for v in value]
    if value is None or not Path(value).exists():
        return value
    return str(Path(value).resolve())


def _shown(value) -> str:
    """
    >>> _shown(None), _shown(["a", "b"]), _shown(True), _shown(0.5)
    ('(not given)', 'a b', '(given)', '0.5')
    """
    if value is None or value is False:
        return "(not given)"
    if value is True:
        return "(given)"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)
