"""Length configurations and the one cost model (docs/method.md, "Drop and restore" and "The cost model").

A length configuration gives, per layer, the share of the input's own tokens (padding excluded)
that the layer keeps and passes on. `None` means the full model. Everything that counts tokens
or cost goes through `kept_tokens` and `encoder_macs`, so the model, the reports and the search
agree on what a configuration costs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from .config import ModelConfig

# LengthDrop's smallest configuration keeps this share of the previous layer's tokens in each layer;
# the search starts from the same smallest configuration
LENGTHDROP_RATIO = 0.8

Lengths = tuple[float, ...]


class LengthsError(ValueError):
    """A length configuration that is malformed for the model it is used with."""


def is_number(value: object) -> bool:
    """A real number (numpy's too), not a bool.

    >>> is_number(0.5), is_number("0.5"), is_number(True)
    (True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_lengths(shares: Sequence[float] | float | None, num_layers: int) -> Lengths | None:
    """Check a configuration: one share per layer, each in (0, 1], never increasing; or one
    number, the share of the input every layer keeps (constant_ratio; as margins take one number).

    All-ones is returned as None, the full model.

    >>> validate_lengths([1.0, 0.5, 0.5], 3), validate_lengths(0.5, 3)
    ((1.0, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> validate_lengths([1, 1], 2) is None
    True
    """
    if shares is None:
        return None
    if is_number(shares):
        shares = [shares] * num_layers
    if isinstance(shares, Iterable) and not isinstance(shares, (str, bytes)):
        shares = list(shares)  # a generator is read once
    if not isinstance(shares, list) or not all(is_number(s) for s in shares):
        raise LengthsError(
            "lengths must be a list of numbers, one share per layer, or one number, the share of the "
            f"input every layer keeps; got {shares!r:.80}"
        )
    shares = tuple(float(s) for s in shares)
    if len(shares) != num_layers:
        raise LengthsError(f"got {len(shares)} length shares but the model has {num_layers} layers")
    for i, share in enumerate(shares):
        if not 0.0 < share <= 1.0 or math.isnan(share):
            raise LengthsError(f"length share {share} of layer {i + 1} is outside (0, 1]")
    for i in range(1, num_layers):
        if shares[i] > shares[i - 1]:
            raise LengthsError(
                f"length shares must not increase: layer {i + 1} keeps {shares[i]} "
                f"after layer {i} kept {shares[i - 1]}"
            )
    return None if all(s == 1.0 for s in shares) else shares


def parse_lengths(text: str, num_layers: int) -> Lengths | None:
    """Parse the CLI form "r1,r2,...,rL", or one share for every layer.

    >>> parse_lengths("1, 0.8,0.5", 3), parse_lengths("0.5", 2)
    ((1.0, 0.8, 0.5), (0.5, 0.5))
    """
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        raise LengthsError(f"--lengths {text!r} is not a comma-separated list of numbers") from None
    return validate_lengths(shares[0] if len(shares) == 1 else shares, num_layers)


def format_lengths(shares: Lengths | None, num_layers: int) -> str:
    """The CLI form of a configuration; the full model prints as all ones.

    >>> format_lengths((1.0, 0.5), 2)
    '1,0.5'
    """
    shares = shares or (1.0,) * num_layers
    return ",".join(f"{s:g}" for s in shares)


Margins = tuple[float, ...]


def validate_margins(margins: Sequence[float] | float | None, num_layers: int) -> Margins | None:
    """Check a margin configuration: one margin per layer (or one number for every layer), each
    >= 0 (inf: the layer keeps every token and scores none). Under a margin, a layer keeps each
    window's forced tokens and the context tokens the learned selector scores within `margin` of
    that window's best one, so the count adapts to the window (docs/selector.md, "Margins").
    All-inf is None, the full model.

    >>> validate_margins([3, 2.5], 2), validate_margins(3, 2)
    ((3.0, 2.5), (3.0, 3.0))
    >>> validate_margins([math.inf, math.inf], 2) is None
    True
    """
    if margins is None:
        return None
    if is_number(margins):
        margins = [margins] * num_layers
    if isinstance(margins, (str, bytes)) or not all(is_number(m) for m in margins):
        raise LengthsError(
            f"margins must be a number or a list of numbers, one per layer, got {margins!r:.80}"
        )
    margins = tuple(float(m) for m in margins)
    if len(margins) != num_layers:
        raise LengthsError(f"got {len(margins)} margins but the model has {num_layers} layers")
    for i, margin in enumerate(margins):
        if not margin >= 0.0:  # also NaN
            raise LengthsError(f"margin {margin} of layer {i + 1} is not a number >= 0")
    return None if all(math.isinf(m) for m in margins) else margins


def parse_margins(text: str, num_layers: int) -> Margins | None:
    """Parse the CLI form "m1,...,mL", or one number for every layer ("inf": keep all).

    >>> parse_margins("3", 2), parse_margins("inf,2", 2)
    ((3.0, 3.0), (inf, 2.0))
    """
    try:
        margins = [float(part) for part in text.split(",")]
    except ValueError:
        raise LengthsError(f"--margins {text!r} is not a comma-separated list of numbers") from None
    return validate_margins(margins[0] if len(margins) == 1 else margins, num_layers)


def format_margins(margins: Margins | None, num_layers: int) -> str:
    """The CLI form of a margin configuration; None (the full model) prints as all inf.

    >>> format_margins((3.0, math.inf), 2), format_margins(None, 2)
    ('3,inf', 'inf,inf')
    """
    return ",".join(f"{m:g}" for m in margins or (math.inf,) * num_layers)


def margins_to_json(margins: Sequence[float] | None) -> list[float | None] | None:
    """Margins in JSON, which has no infinity: null for a layer that keeps every token.

    >>> margins_to_json((math.inf, 3.0)), margins_from_json([None, 3])
    ([None, 3.0], (inf, 3.0))
    """
    return None if margins is None else [None if math.isinf(m) else float(m) for m in margins]


def margins_from_json(values: Sequence[float | None] | None) -> Margins | None:
    """The inverse of margins_to_json (not validated)."""
    return None if values is None else tuple(math.inf if m is None else float(m) for m in values)


def kept_tokens(n_tokens: int, share: float) -> int:
    """Tokens a layer keeps out of an input of `n_tokens` real tokens: the share, rounded up.

    >>> kept_tokens(100, 0.5), kept_tokens(101, 0.5), kept_tokens(3, 0.01)
    (50, 51, 1)
    """
    # the small slack keeps 0.7 * 100 (= 70.00000000000001 in floating point) at 70
    return max(1, min(n_tokens, math.ceil(n_tokens * share - 1e-9)))


def token_counts(n_tokens: int, shares: Lengths | None, num_layers: int) -> list[int]:
    """n(0), ..., n(L): tokens entering the first layer, then kept by each layer.

    >>> token_counts(10, (1.0, 0.5, 0.2), 3)
    [10, 10, 5, 2]
    """
    if shares is None:
        return [n_tokens] * (num_layers + 1)
    return [n_tokens] + [kept_tokens(n_tokens, s) for s in shares]


def encoder_macs(
    config: ModelConfig, n_tokens: int, shares: Lengths | None = None, scorer_macs: int = 0
) -> int:
    """Multiply-adds of the encoder layers on one input of `n_tokens` real tokens.

    Layer i, with n(i-1) tokens in and n(i) kept, costs
        4 n(i-1) d^2   Q, K, V and output projections
      + 2 n(i-1)^2 d   the two attention products
      + 2 n(i) d f     the feed-forward block on the kept tokens only
      + n(i-1) s       where the layer drops tokens, a learned selector scoring each token
                       (s = scorer_macs per token; 0 for attention received, a by-product).
    Embeddings and the QA head are left out (lookups, and 2 d per token).

    >>> round(encoder_macs(ModelConfig(hidden_size=768, intermediate_size=3072), 384) / 1e9, 1)
    17.7
    >>> c = ModelConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2)
    >>> encoder_macs(c, 10, (1.0, 0.5), scorer_macs=100) - encoder_macs(c, 10, (1.0, 0.5))
    1000
    """
    return counts_macs(config, token_counts(n_tokens, shares, config.num_hidden_layers), scorer_macs)


def counts_macs(
    config: ModelConfig, counts: Sequence[int], scorer_macs: int = 0, scored: Sequence[bool] | None = None
) -> int:
    """encoder_macs for one input whose layers passed on these token counts, n(0), ..., n(L)
    (token_counts, or what a margin configuration kept: QAOutput.token_counts). `scored`: per
    layer, whether a selector scored its tokens (default: where the layer dropped some).

    >>> c = ModelConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2)
    >>> counts_macs(c, [10, 10, 5], 100) == encoder_macs(c, 10, (1.0, 0.5), 100)
    True
    >>> counts_macs(c, [10, 10, 5], 100, scored=[True, True]) - counts_macs(c, [10, 10, 5], 100)
    1000
    """
    d, f = config.hidden_size, feed_forward_size(config)
    pairs = list(zip(counts[:-1], counts[1:], strict=True))
    scored = [n_out < n_in for n_in, n_out in pairs] if scored is None else scored
    return sum(
        4 * n_in * d * d + 2 * n_in * n_in * d + 2 * n_out * d * f + (n_in * scorer_macs if score else 0)
        for (n_in, n_out), score in zip(pairs, scored, strict=True)
    )


def feed_forward_size(config) -> int:
    """The feed-forward block's width, by the name the model's config gives it (BERT and MPNet
    intermediate_size, DistilBERT hidden_dim, T5 d_ff, GPT-2 n_inner; 4 d where none is set).

    >>> from types import SimpleNamespace as Config
    >>> feed_forward_size(Config(hidden_size=32, hidden_dim=64)), feed_forward_size(Config(hidden_size=8))
    (64, 32)
    """
    for name in ("intermediate_size", "hidden_dim", "d_ff", "n_inner"):
        if isinstance(value := getattr(config, name, None), int):
            return value
    return 4 * config.hidden_size


def encoder_gflops(
    config: ModelConfig, n_tokens: int, shares: Lengths | None = None, scorer_macs: int = 0
) -> float:
    """FLOPs (twice the multiply-adds) in billions."""
    return 2 * encoder_macs(config, n_tokens, shares, scorer_macs) / 1e9


def mean_gflops(
    config: ModelConfig, window_tokens: Sequence[int], shares: Lengths | None = None, scorer_macs: int = 0
) -> float:
    """Mean GFLOPs per window over windows of these token counts (each at its own length: dynamic
    padding), what `eval` and the server report."""
    return float(np.mean([encoder_gflops(config, n, shares, scorer_macs) for n in window_tokens]))


def geometric_lengths(keep: float, num_layers: int) -> Lengths | None:
    """Each layer keeps the share `keep` of the tokens the previous layer kept; LengthDrop's
    smallest configuration is geometric_lengths(0.8, L).

    >>> geometric_lengths(0.5, 3)
    (0.5, 0.25, 0.125)
    """
    return validate_lengths([keep ** (i + 1) for i in range(num_layers)], num_layers)


def geometric_with_mean(share: float, num_layers: int) -> Lengths | None:
    """The geometric configuration whose layers keep `share` of the input on average (about that
    share of the layers' work, attention aside), shares rounded to 3 digits. Every layer drops
    tokens, so every layer's scorer counts when the selector stage selects its checkpoints on it.

    >>> geometric_with_mean(0.5, 6)
    (0.805, 0.647, 0.521, 0.419, 0.337, 0.271)
    """
    low, high = 0.0, 1.0
    for _ in range(50):
        keep = (low + high) / 2
        if sum(keep ** (i + 1) for i in range(num_layers)) < share * num_layers:
            low = keep
        else:
            high = keep
    return validate_lengths([round(low ** (i + 1), 3) for i in range(num_layers)], num_layers)


def constant_ratio(share: float, num_layers: int) -> Lengths | None:
    """Every layer keeps the same share of the input.

    >>> constant_ratio(0.5, 3)
    (0.5, 0.5, 0.5)
    """
    return validate_lengths([share] * num_layers, num_layers)


def sample_lengths(rng: np.random.Generator, num_layers: int, low: float = LENGTHDROP_RATIO) -> Lengths:
    """A random configuration for LengthDrop: each layer keeps between `low` and all of the
    tokens the previous layer kept.

    >>> shares = sample_lengths(np.random.default_rng(0), 4)
    >>> all(0.8 * a <= b <= a for a, b in zip((1.0,) + shares, shares))
    True
    """
    shares, share = [], 1.0
    for _ in range(num_layers):
        share *= rng.uniform(low, 1.0)
        shares.append(share)
    return tuple(shares)


def sample_layer_skips(rng: np.random.Generator, num_layers: int, p: float) -> list[bool]:
    """LayerDrop: each layer left out with probability p, but never all of them.

    >>> sample_layer_skips(np.random.default_rng(0), 3, 0.0)
    [False, False, False]
    """
    skips = (rng.random(num_layers) < p).tolist()
    if all(skips):
        skips[int(rng.integers(num_layers))] = False
    return skips
