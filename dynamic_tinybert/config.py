"""Settings as small dataclasses, each declared once.

`ModelConfig` mirrors the fields of a transformers `BertConfig` that the encoder needs; it keeps
the raw config.json beside them so that saving writes back every key it was loaded with.
`WindowSettings` holds how a question and a long context are cut into model inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
# how a dropping layer chooses the tokens it keeps: the attention they receive (PoWER-BERT), or the
# model's learned selector (selector.py)
SELECTORS = ("attention", "learned")


class ConfigError(ValueError):
    """A config.json that does not describe a BERT encoder we can run."""


@dataclass
class ModelConfig:
    vocab_size: int = 30522
    hidden_size: int = 768  # d in the cost model
    num_hidden_layers: int = 6  # L
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # f, the FFN width
    hidden_act: str = "gelu"  # the released Dynamic-TinyBERT uses "relu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # every key of the config.json it came from, written back unchanged on save
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "pad_token_id":
                continue  # some configs leave it out as null: no padding embedding
            kinds = {"int": (int,), "float": (int, float), "str": (str,)}.get(f.type)
            if kinds is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise ConfigError(
                    f"{f.name} is {value!r}; expected a{'n' if f.type == 'int' else ''} {f.type}"
                )
            least = 0 if f.name == "pad_token_id" else 1
            if f.type == "int" and value < least:
                raise ConfigError(f"{f.name} is {value}; expected at least {least}")
        if not (0 <= self.hidden_dropout_prob < 1 and 0 <= self.attention_probs_dropout_prob < 1):
            raise ConfigError("dropout probabilities must be from 0 to below 1")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"layer_norm_eps is {self.layer_norm_eps}; expected a positive number")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"hidden_act {self.hidden_act!r} is not supported; expected one of {', '.join(ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Read a transformers config.json dictionary; only BERT encoders are accepted.

        >>> ModelConfig.from_dict({"model_type": "bert", "hidden_size": 384}).hidden_size
        384
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"config.json holds {type(raw).__name__}, not a JSON object")
        model_type = raw.get("model_type")
        if model_type != "bert":
            raise ConfigError(f"model_type is {model_type!r}, expected 'bert'")
        names = {f.name for f in dataclasses.fields(cls)} - {"raw"}
        values = {k: raw[k] for k in names if k in raw}
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(f"position_embedding_type {position_type!r} is not supported, only 'absolute'")
        try:
            return cls(**values, raw=dict(raw))
        except TypeError as error:
            raise ConfigError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        """The config.json of a transformers BertForQuestionAnswering with these settings."""
        out = dict(self.raw)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "raw"})
        out["model_type"] = "bert"
        out["architectures"] = ["BertForQuestionAnswering"]
        out.setdefault("position_embedding_type", "absolute")
        out.pop("_name_or_path", None)
        return out


@dataclass(frozen=True)
class WindowSettings:
    """How a (question, context) pair becomes model inputs (docs/method.md, "Windows, answers
    and the metric")."""

    max_length: int = 384  # tokens per window, [CLS] question [SEP] context [SEP]
    stride: int = 128  # tokens shared by two consecutive windows of one context
    # longer questions are cut to this many tokens, with a warning: half the window, so that the
    # other half holds context. (The transformers examples cut at 64, a question the model then
    # never reads whole; SQuAD dev's longest question has 38 tokens.)
    max_query_length: int = (384 - 3) // 2

    def fit(self, max_positions: int) -> WindowSettings:
        """These settings shrunk to fit a model with fewer position embeddings than max_length."""
        if max_positions >= self.max_length:
            return self
        return WindowSettings(max_positions, max_positions // 3, (max_positions - 3) // 2)
