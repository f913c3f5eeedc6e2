"""The encoder: parity with transformers at full length, drop-and-restore semantics, batching."""

from __future__ import annotations

import pytest
import torch

from dynamic_tinybert import checkpoint, model
from dynamic_tinybert.lengths import kept_tokens
from dynamic_tinybert.model import select_tokens

from .conftest import kept_per_layer

CONFIGS = [
    None,
    (1.0, 1.0, 1.0, 0.5),
    (0.9, 0.7, 0.5, 0.3),
    (0.5, 0.5, 0.25, 0.1),
    (1.0, 0.6, 0.6, 0.6),
]


def random_batch(vocab_size: int, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded inputs; the first third of each row is segment 0 (the question)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, vocab_size, (len(lengths), width), generator=g)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        types[row, n // 3 : n] = 1
        ids[row, n:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_relu_bin"])
def test_full_length_matches_transformers(fixture, request):
    from transformers import AutoModelForQuestionAnswering

    folder = request.getfixturevalue(fixture)
    ours, _, _ = checkpoint.load(folder)
    reference = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    batch = random_batch(ours.config.vocab_size, [57, 40, 13])
    with torch.no_grad():
        expected = reference(**batch)
        got = ours(**batch)
    real = batch["attention_mask"].bool()
    for name in ("start_logits", "end_logits"):
        diff = (getattr(got, name) - getattr(expected, name))[real].abs().max().item()
        assert diff <= 1e-4, f"{name} differs from transformers by {diff}"


def assert_batch_equals_each_row_alone(net, lengths=None, atol: float = 1e-5, **options) -> None:
    """Rows of different lengths, padded into one batch, get the logits each gets alone; options
    go to the model (margins=...)."""
    sizes = [61, 9, 33, 60, 2]
    batch = random_batch(net.config.vocab_size, sizes, seed=3)
    with torch.no_grad():
        together = net(**batch, lengths=lengths, **options)
        for row, n in enumerate(sizes):
            alone = net(**{k: v[row : row + 1, :n] for k, v in batch.items()}, lengths=lengths, **options)
            for name in ("start_logits", "end_logits"):
                a, b = getattr(alone, name)[0], getattr(together, name)[row, :n]
                a, b = a.float(), b.float()
                same = torch.equal(a, b) if atol == 0 else torch.allclose(a, b, atol=atol)
                assert same, f"row {row}: {name} differs by {(a - b).abs().max()}"


@pytest.mark.parametrize("lengths", CONFIGS)
def test_batch_equals_each_row_alone(tiny_model, lengths):
    net, _, _ = checkpoint.load(tiny_model)
    assert_batch_equals_each_row_alone(net, lengths)


def test_dropping_layers_feed_forward_only_the_kept_tokens(tiny_model):
    net, _, _ = checkpoint.load(tiny_model)
    n, lengths = 50, (0.9, 0.7, 0.7, 0.2)
    seen = []
    hooks = [
        layer.ffn_in.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0])) for layer in net.layers
    ]
    with torch.no_grad():
        net(**random_batch(net.config.vocab_size, [n]), lengths=lengths)
    for hook in hooks:
        hook.remove()
    assert seen == [kept_tokens(n, share) for share in lengths] == [45, 35, 35, 10]


def test_only_dropping_layers_build_attention_probabilities(tiny_model, monkeypatch):
    net, _, _ = checkpoint.load(tiny_model)
    calls = []
    original = model._explicit_attention
    monkeypatch.setattr(model, "_explicit_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    batch = random_batch(net.config.vocab_size, [40, 30])
    with torch.no_grad():
        net(**batch)
        assert calls == []
        net(**batch, lengths=(1.0, 0.5, 0.5, 0.25))  # layers 2 and 4 drop tokens
    assert len(calls) == 2


def test_dropped_tokens_keep_their_latest_hidden_state(tiny_model):
    """Tokens dropped by the last layer reach the QA head with the state they entered it with."""
    net, _, _ = checkpoint.load(tiny_model)
    batch = random_batch(net.config.vocab_size, [30])
    with torch.no_grad():
        full = net(**batch, output_hidden_states=True)
        before_last = net.qa_head(full.hidden_states[-2])[0]  # (T, 2)
        dropped = net(**batch, lengths=(1.0, 1.0, 1.0, 0.4))
    logits = torch.stack([dropped.start_logits[0], dropped.end_logits[0]], dim=-1)
    kept = ~torch.isclose(logits, before_last, atol=1e-5).all(dim=-1)
    assert int(kept.sum()) == kept_tokens(30, 0.4)
    full_logits = torch.stack([full.start_logits[0], full.end_logits[0]], dim=-1)
    # the kept tokens went through the last layer as in the full model: attention saw every token
    assert torch.allclose(logits[kept], full_logits[kept], atol=1e-5)


def test_kept_tokens_are_those_receiving_most_attention(tiny_model, monkeypatch):
    net, _, _ = checkpoint.load(tiny_model)
    batch = random_batch(net.config.vocab_size, [25])
    chosen = []
    original = model.select_tokens

    def record(significance, keep):
        kept = original(significance, keep)
        chosen.append(kept[0].nonzero().squeeze(1))
        return kept

    monkeypatch.setattr(model, "select_tokens", record)
    with torch.no_grad():
        full = net(**batch, output_attentions=True)
        net(**batch, lengths=(0.6, 0.6, 0.6, 0.6))  # only layer 1 drops
    received = full.attentions[0][0].sum(dim=(0, 1))  # layer 1: summed over heads and queries
    assert len(chosen) == 1
    assert sorted(chosen[0].tolist()) == sorted(received.topk(kept_tokens(25, 0.6)).indices.tolist())


def test_select_tokens_keeps_the_most_significant_of_each_row():
    significance = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.8, -float("inf"), -float("inf")]])
    kept = select_tokens(significance, torch.tensor([3, 1]))
    assert kept.tolist() == [[False, True, True, True], [False, True, False, False]]


def test_gradients_flow_through_dropping_layers(tiny_model):
    net, _, _ = checkpoint.load(tiny_model)
    net.train()
    out = net(**random_batch(net.config.vocab_size, [20, 14]), lengths=(0.8, 0.5, 0.5, 0.3))
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    # every weight learns: none is cut off by the drops (a gradient of zeros would pass `is not None`)
    silent = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_a_token_dropped_before_the_last_layer_learns_through_its_restored_state(tiny_model):
    """The logits of a token the last layer drops come from the state it entered that layer with:
    their gradient reaches the embeddings and no weight of the last layer."""
    net, _, _ = checkpoint.load(tiny_model)
    net.eval()
    batch = random_batch(net.config.vocab_size, [30])
    lengths = (1.0, 1.0, 1.0, 0.4)
    [kept] = kept_per_layer(net, batch, lengths)
    dropped = [t for t in range(30) if t not in kept]
    out = net(**batch, lengths=lengths)
    out.start_logits[0, dropped].sum().backward()
    assert net.embeddings.word.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in net.layers[-1].parameters())


def test_bad_lengths_are_rejected(tiny_model):
    net, _, _ = checkpoint.load(tiny_model)
    batch = random_batch(net.config.vocab_size, [10])
    for bad in [(1.0, 0.5), (1.0, 0.5, 0.7, 0.2), (1.0, 0.0, 0.0, 0.0), (1.2, 1, 1, 1)]:
        with pytest.raises(ValueError):
            net(**batch, lengths=bad)
