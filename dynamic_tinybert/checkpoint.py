"""Checkpoints in the transformers layout: config.json, weights, tokenizer files.

What we save loads in plain `transformers.AutoModelForQuestionAnswering`; what we load is any
BERT checkpoint in that layout (BertForQuestionAnswering, or a bare BertModel whose QA head is
then initialised at random), from a folder or a Hugging Face Hub id. Weights are read from
safetensors, or from a pickle (.bin) with `weights_only=True`, so loading never runs code.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import ConfigError, ModelConfig, WindowSettings
from .files import atomic_write
from .model import DynamicBertForQuestionAnswering
from .selector import SelectorError, TokenSelector
from .tokenizer import TOKENIZER_FILES, QATokenizer, TokenizerError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# our parameter names -> transformers' BertForQuestionAnswering names
_EMBEDDINGS = {
    "embeddings.word": "bert.embeddings.word_embeddings",
    "embeddings.position": "bert.embeddings.position_embeddings",
    "embeddings.token_type": "bert.embeddings.token_type_embeddings",
    "embeddings.norm": "bert.embeddings.LayerNorm",
    "qa_head": "qa_outputs",
}
_LAYER = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
# the trained model `dynamic-tinybert` uses when no --model is given
DEFAULT_MODEL = Path(__file__).parent / "default_model"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(ValueError):
    """A model folder or id that does not hold a BERT question-answering checkpoint we can load."""


def to_hf_name(name: str) -> str:
    """Our parameter name -> the transformers one.

    >>> to_hf_name("layers.3.ffn_in.weight")
    'bert.encoder.layer.3.intermediate.dense.weight'
    """
    module, param = name.rsplit(".", 1)
    if module.startswith("layers."):
        _, index, part = module.split(".")
        return f"bert.encoder.layer.{index}.{_LAYER[part]}.{param}"
    return f"{_EMBEDDINGS[module]}.{param}"


def from_hf_names(state: dict[str, Tensor], names: Iterable[str]) -> dict[str, Tensor]:
    """Rename a transformers BERT state dict to our parameter `names`.

    Keys we have no use for (pooler, pretraining heads, position_ids) are left out. Accepts
    BertModel keys (no "bert." prefix) and the old LayerNorm gamma/beta names.
    """
    ours = {to_hf_name(name): name for name in names}
    out = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if not key.startswith(("bert.", "qa_outputs.")):
            key = "bert." + key
        if key in ours:
            out[ours[key]] = value
    return out


def resolve(name_or_path: str | Path | None = None) -> Path:
    """A local model folder, the folder a Hub id downloads to, or (None) the default model that
    ships inside the package."""
    if name_or_path is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise CheckpointError(
                "no default model is installed with this package; give --model FOLDER or a Hub id"
            )
        return DEFAULT_MODEL
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; give the model folder that holds config.json")
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise CheckpointError(f"model folder {path} does not exist")
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = [
        "config.json",
        "*.safetensors",
        "*.safetensors.index.json",
        "*.bin",
        "*.bin.index.json",
        "frontier.json",
        *TOKENIZER_FILES,
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:  # offline, unknown repository, gated, ...
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and downloading it from the Hugging Face Hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a model folder: it has no config.json")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    except ConfigError as error:
        raise CheckpointError(f"{path} does not describe a BERT model we can run: {error}") from None


def read_weights(folder: Path) -> dict[str, Tensor]:
    """The state dict of the first weights file found, safetensors first."""
    found = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        raise CheckpointError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")
    path = folder / found[0]
    try:
        if path.name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(_read_weight_file(folder / shard))
            return state
        return _read_weight_file(path)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"cannot read the weights in {path} ({type(error).__name__}: {error}); the file may be truncated "
            "or corrupt"
        ) from None


def _read_weight_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_file(path)
    # weights_only: a pickle may only hold tensors and plain containers, never code to run
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def load(
    name_or_path: str | Path | None = None, dtype: torch.dtype = torch.float32, require_qa_head: bool = False
) -> tuple[DynamicBertForQuestionAnswering, QATokenizer, Path]:
    """Model (in eval mode), tokenizer and the folder they came from.

    A checkpoint without a QA head (a bare BERT encoder) gets a randomly initialised one, with a
    warning, as transformers does, unless require_qa_head.
    """
    folder = resolve(name_or_path)
    config = read_config(folder)
    try:
        tokenizer = QATokenizer.from_folder(folder, WindowSettings().fit(config.max_position_embeddings))
    except TokenizerError as error:
        raise CheckpointError(str(error)) from None
    with torch.device("meta"):  # no storage and no random init for weights the file replaces
        model = DynamicBertForQuestionAnswering(config)
    expected = model.state_dict()
    state = from_hf_names(read_weights(folder), expected)
    missing = [name for name in expected if name not in state]
    head = {"qa_head.weight", "qa_head.bias"}
    if set(missing) - head:
        names = ", ".join(to_hf_name(name) for name in sorted(set(missing) - head)[:3])
        raise CheckpointError(f"the weights in {folder} do not fit its config.json: {names} ... are missing")
    if missing:
        if require_qa_head:
            raise CheckpointError(f"{folder} has no question-answering head (qa_outputs); fine-tune it first")
        print(
            f"warning: {folder} has no question-answering head; it is initialised at random", file=sys.stderr
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"weight {to_hf_name(name)} in {folder} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=False, assign=True)
    if missing:  # the head only (checked above): a fresh one, initialised as BERT's
        model.qa_head = torch.nn.Linear(config.hidden_size, 2)
        model._init_weights(model.qa_head)
    try:
        model.selector = TokenSelector.load(folder, config.hidden_size, config.num_hidden_layers)
    except SelectorError as error:
        raise CheckpointError(str(error)) from None
    return model.to(dtype).eval(), tokenizer, folder


def load_qa_model(
    name_or_path: str | Path | None = None, attentions: bool = False
) -> tuple[torch.nn.Module, QATokenizer, Path]:
    """Our model for a BERT checkpoint; any other model type (an MPNet teacher, say) runs
    through transformers' AutoModelForQuestionAnswering, at full length only, on our windows."""
    from .transformers_qa import TransformersQA, load_transformers_qa

    folder = resolve(name_or_path)
    kind = _model_type(folder)
    if kind is None or kind == "bert":
        return load(folder)
    try:
        model = TransformersQA(load_transformers_qa(folder, attentions))
        tokenizer = QATokenizer.from_folder(
            folder, WindowSettings().fit(model.config.max_position_embeddings - 2)
        )
    except (OSError, ValueError, ImportError) as error:
        raise CheckpointError(
            f"{folder} holds a {kind} model, and transformers cannot load it: {error}"
        ) from None
    return model.eval(), tokenizer, folder


def _model_type(folder: Path) -> str | None:
    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def save(
    model: DynamicBertForQuestionAnswering,
    tokenizer: QATokenizer,
    folder: str | Path,
    dtype: torch.dtype | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a transformers-layout checkpoint. The folder appears whole or not at all: it is
    written beside its target and renamed into place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)

    def write(staging: Path) -> None:
        state = {
            to_hf_name(k): v.detach().to(dtype or v.dtype).contiguous().cpu()
            for k, v in model.state_dict().items()
            if not k.startswith("selector.")  # the selector has a file of its own
        }
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        if model.selector is not None:
            model.selector.save(staging)
        config = model.config.to_dict()
        config["torch_dtype"] = str(dtype or next(model.parameters()).dtype).removeprefix("torch.")
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save(staging)
        for name, content in (extra_files or {}).items():
            (staging / name).write_bytes(content)

    return atomic_write(folder, write, folder=True)
