"""Length configurations and the one cost model."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dynamic_tinybert import checkpoint
from dynamic_tinybert.config import ModelConfig
from dynamic_tinybert.lengths import (
    LengthsError,
    encoder_macs,
    format_lengths,
    kept_tokens,
    parse_lengths,
    token_counts,
    validate_lengths,
)


def test_published_costs_at_384_tokens():
    bert_base = ModelConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
    tinybert = ModelConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=6)
    assert round(encoder_macs(bert_base, 384) / 1e9, 1) == 35.3
    assert round(encoder_macs(tinybert, 384) / 1e9, 1) == 17.7


def test_cost_follows_the_formula_layer_by_layer():
    config = ModelConfig(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    # n = 10, 10 -> 5 -> 2
    layer1 = 4 * 10 * 64 + 2 * 100 * 8 + 2 * 5 * 8 * 32
    layer2 = 4 * 5 * 64 + 2 * 25 * 8 + 2 * 2 * 8 * 32
    assert encoder_macs(config, 10, (0.5, 0.2)) == layer1 + layer2
    assert token_counts(10, (0.5, 0.2), 2) == [10, 5, 2]


@pytest.mark.parametrize("lengths", [None, (1.0, 1.0, 0.5, 0.5), (0.8, 0.6, 0.4, 0.2), (0.5, 0.5, 0.5, 0.5)])
@pytest.mark.parametrize("n_tokens", [7, 64, 201])
def test_cost_model_matches_the_flops_of_the_real_forward_pass(tiny_model, lengths, n_tokens):
    net, _, _ = checkpoint.load(tiny_model)
    ids = torch.randint(5, net.config.vocab_size, (1, n_tokens))
    counter = FlopCounterMode(display=False)
    # the counter has no formula for the fused CPU attention kernel: count its math form instead
    with torch.no_grad(), counter, sdpa_kernel(SDPBackend.MATH):
        net(ids, lengths=lengths)
    # outside the cost model: the QA head (2 d per token), and in each layer that drops tokens
    # the significance score (H n(i-1)^2, under 1% of that layer's attention products)
    counts = token_counts(n_tokens, lengths, net.config.num_hidden_layers)
    dropping = [n_in for n_in, n_out in zip(counts[:-1], counts[1:], strict=True) if n_out < n_in]
    outside = 2 * n_tokens * net.config.hidden_size + sum(
        net.config.num_attention_heads * n * n for n in dropping
    )
    assert counter.get_total_flops() == 2 * (encoder_macs(net.config, n_tokens, lengths) + outside)


def test_kept_tokens_rounds_up_and_keeps_at_least_one():
    assert kept_tokens(100, 0.7) == 70
    assert kept_tokens(101, 0.5) == 51
    assert kept_tokens(5, 0.01) == 1
    assert kept_tokens(5, 1.0) == 5


def test_validation():
    assert validate_lengths([1, 1, 1], 3) is None
    assert validate_lengths(None, 3) is None
    assert validate_lengths([1, 0.5, 0.5], 3) == (1.0, 0.5, 0.5)
    with pytest.raises(LengthsError, match="2 length shares but the model has 3 layers"):
        validate_lengths([1, 0.5], 3)
    with pytest.raises(LengthsError, match="outside"):
        validate_lengths([1, 0.5, 0], 3)
    with pytest.raises(LengthsError, match="outside"):
        validate_lengths([1.5, 1, 1], 3)
    with pytest.raises(LengthsError, match="must not increase"):
        validate_lengths([1, 0.5, 0.6], 3)


def test_one_number_is_the_share_every_layer_keeps():
    """As margins take one number; lengths=0.5 was a bare TypeError."""
    assert validate_lengths(0.5, 3) == (0.5, 0.5, 0.5) == parse_lengths("0.5", 3)
    assert validate_lengths(1, 3) is None
    with pytest.raises(LengthsError, match="or one number, the share of the input every layer keeps"):
        validate_lengths(True, 3)


def test_parse_and_format_round_trip():
    assert parse_lengths("1,0.8, 0.5", 3) == (1.0, 0.8, 0.5)
    assert format_lengths((1.0, 0.8, 0.5), 3) == "1,0.8,0.5"
    assert format_lengths(None, 2) == "1,1"
    with pytest.raises(LengthsError, match="comma-separated"):
        parse_lengths("1,a,0.5", 3)
