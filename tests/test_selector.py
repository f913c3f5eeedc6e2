"""The learned token selector: what it keeps, how it runs, how it is saved and loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from dynamic_tinybert import QuestionAnswerer, checkpoint, model
from dynamic_tinybert.cli import main
from dynamic_tinybert.lengths import kept_tokens
from dynamic_tinybert.selector import (
    FILENAME,
    SelectorError,
    answer_region,
    context_tokens,
    selector_loss,
)

from .conftest import (
    CONTEXT,
    SHARED_DATA,
    kept_per_layer,
    load_script,
    make_checkpoint,
    run_model_card_quick_start,
    with_random_selector,
)
from .test_model import CONFIGS, assert_batch_equals_each_row_alone, random_batch


@pytest.mark.parametrize("lengths", CONFIGS)
def test_batch_equals_each_row_alone_with_the_learned_selector(tiny_model, lengths):
    net, _ = with_random_selector(tiny_model)
    assert_batch_equals_each_row_alone(net, lengths)


def test_full_length_is_the_same_with_or_without_a_selector(tiny_model):
    plain, _, _ = checkpoint.load(tiny_model)
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, [40, 23])
    with torch.no_grad():
        assert torch.equal(plain(**batch).start_logits, net(**batch).start_logits)


def test_question_and_separators_always_stay_and_count_against_the_share(tiny_model):
    net, _ = with_random_selector(tiny_model)
    n = 60
    batch = random_batch(net.config.vocab_size, [n])  # segment 0 is the first 20 tokens
    lengths = (0.8, 0.6, 0.5, 0.4)
    kept = kept_per_layer(net, batch, lengths)
    forced = set(range(20)) | {n - 1}  # [CLS] question [SEP], and the final [SEP]
    for layer, share in zip(kept, lengths, strict=True):
        assert forced <= set(layer)
        assert len(layer) == kept_tokens(n, share)
    # a share smaller than the question keeps its first tokens
    assert kept_per_layer(net, batch, (0.1, 0.1, 0.1, 0.1))[0] == list(range(kept_tokens(n, 0.1)))


def first_layer_scores(folder, n: int = 50):
    """A tiny model with a random selector, one input of n tokens, its context mask (n,) and the
    first layer's scores of its tokens (n,): layer 1 always sees the full pass."""
    net, _ = with_random_selector(folder)
    batch = random_batch(net.config.vocab_size, [n])
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])[0]
    with torch.no_grad():
        full = net(**batch, output_attended=True)
        valid = batch["attention_mask"].bool()
        scores = net.selector(0, full.attended[0], valid & ~context[None], valid)[0]
    return net, batch, context, scores


def test_the_context_tokens_kept_are_those_the_scorer_ranks_highest(tiny_model):
    n = 50
    net, batch, context, scores = first_layer_scores(tiny_model, n)
    [kept] = kept_per_layer(net, batch, (0.6, 0.6, 0.6, 0.6))
    slots = kept_tokens(n, 0.6) - int((~context).sum())
    best = scores.masked_fill(~context, -torch.inf).topk(slots).indices.tolist()
    assert sorted(p for p in kept if context[p]) == sorted(best)


def test_each_dropping_layer_returns_its_scores_where_its_tokens_are(tiny_model):
    """What the selector's cascade training reads: per dropping layer, the scores of the tokens
    present in the input layout; the best-scored context tokens among them are the ones kept."""
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, [50, 31])
    lengths = (0.8, 0.6, 0.6, 0.5)  # layer 2 keeps what layer 1 kept: three dropping layers
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])
    out = net(**batch, lengths=lengths, output_scores=True)
    kept = [kept_per_layer(net, {k: v[row : row + 1] for k, v in batch.items()}, lengths) for row in (0, 1)]
    assert len(out.scores) == 3
    present = batch["attention_mask"].bool()
    for i, (scores, here) in enumerate(out.scores):
        assert torch.equal(here, present)  # the tokens the layer received
        assert scores.requires_grad and bool((scores[~here] == 0).all())
        for row in (0, 1):
            keep = [p for p in kept[row][i] if context[row, p]]  # the context tokens kept
            best = scores[row].detach().masked_fill(~(context[row] & here[row]), -torch.inf).topk(len(keep))
            assert sorted(best.indices.tolist()) == keep
            present[row] = False
            present[row, kept[row][i]] = True
    scores[0].sum().backward()
    assert all(p.grad is not None for p in net.selector.scorers[3].parameters())  # the last drop: layer 3
    with pytest.raises(ValueError, match="learned selector"):
        net(**batch, lengths=lengths, output_scores=True, selector="attention")


def test_a_scorer_on_packed_tokens_scores_as_on_their_padded_view(tiny_model):
    """The model scores the packed tokens of its rows (no work on padding); training scores a
    padded view. Rows of different lengths and questions: the same scores on every real token."""
    net, _ = with_random_selector(tiny_model)
    counts = [9, 4, 7]
    tokens = model.Tokens(counts, torch.arange(sum(counts)), sum(counts))
    torch.manual_seed(1)
    packed = torch.randn(sum(counts), net.config.hidden_size)
    question = torch.zeros(tokens.valid.shape, dtype=torch.bool)
    for row, asked in enumerate((slice(1, 5), slice(1, 2), slice(1, 3))):
        question[row, asked] = True
    scorer = net.selector.scorers[1]
    with torch.no_grad():
        padded = scorer(tokens.pad(packed), question, tokens.valid)
        scores = scorer(packed, question, tokens.valid, packed=tokens)
    assert torch.allclose(scores[tokens.valid], padded[tokens.valid], atol=1e-6)
    assert not torch.allclose(scores[1:], padded[:-1])  # each row its own question


def test_the_learned_selector_uses_fused_attention(tiny_model, monkeypatch):
    net, _ = with_random_selector(tiny_model)
    calls = []
    original = model._explicit_attention
    monkeypatch.setattr(model, "_explicit_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    batch = random_batch(net.config.vocab_size, [40, 30])
    with torch.no_grad():
        net(**batch, lengths=(1.0, 0.5, 0.5, 0.25))
        assert calls == []
        net(**batch, lengths=(1.0, 0.5, 0.5, 0.25), selector="attention")  # layers 2 and 4 drop
    assert len(calls) == 2


def test_attention_and_learned_selectors_keep_different_tokens(tiny_model):
    net, _ = with_random_selector(tiny_model)
    batch = random_batch(net.config.vocab_size, [60])
    lengths = (0.5, 0.5, 0.5, 0.5)
    learned = kept_per_layer(net, batch, lengths, selector="learned")
    assert learned != kept_per_layer(net, batch, lengths, selector="attention")


def test_selector_is_saved_beside_the_model_and_loaded_with_it(tiny_selector_model, tiny_model):
    assert (tiny_selector_model / FILENAME).is_file()
    loaded, _, _ = checkpoint.load(tiny_selector_model)
    assert loaded.selector is not None
    net, _ = with_random_selector(tiny_model)
    for a, b in zip(loaded.selector.state_dict().values(), net.selector.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert checkpoint.load(tiny_model)[0].selector is None


def test_a_selector_of_another_shape_than_the_default_loads_as_saved(tiny_model, tmp_path):
    from dynamic_tinybert.selector import SelectorConfig, TokenSelector

    net, tokenizer, _ = checkpoint.load(tiny_model)
    config = SelectorConfig(net.config.hidden_size, net.config.num_hidden_layers, 8, 2, 4, (3,))
    net.selector = TokenSelector(config)
    folder = checkpoint.save(net, tokenizer, tmp_path / "model")
    loaded, _, _ = checkpoint.load(folder)
    assert loaded.selector.config == config
    for name, weight in net.selector.state_dict().items():
        assert torch.equal(weight, loaded.selector.state_dict()[name]), name


def test_plain_transformers_loads_a_folder_with_a_selector(tiny_selector_model):
    from transformers import AutoModelForQuestionAnswering

    ours, _, _ = checkpoint.load(tiny_selector_model)
    theirs = AutoModelForQuestionAnswering.from_pretrained(tiny_selector_model).eval()
    batch = random_batch(ours.config.vocab_size, [30])
    with torch.no_grad():
        assert torch.allclose(ours(**batch).start_logits, theirs(**batch).start_logits, atol=1e-4)
    assert "Answer:" in run_model_card_quick_start(tiny_selector_model)


def test_a_selector_that_does_not_fit_its_model_gets_a_clear_error(tiny_selector_model, tmp_path, capsys):
    folder = make_checkpoint(tmp_path / "wider", hidden_size=32, num_attention_heads=2)
    shutil.copy(tiny_selector_model / FILENAME, folder / FILENAME)
    with pytest.raises(checkpoint.CheckpointError, match="does not match its model"):
        checkpoint.load(folder)
    assert main(["ask", "--model", str(folder), "--question", "q?", "--context", CONTEXT]) == 2
    assert "retrain it" in capsys.readouterr().err
    (folder / FILENAME).write_bytes(b"not a safetensors file")
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        checkpoint.load(folder)


def test_learned_selector_on_a_model_without_one_is_refused(tiny_model, capsys):
    qa = QuestionAnswerer.from_pretrained(tiny_model)
    with pytest.raises(ValueError, match="has no learned selector"):
        qa(question="How large?", context=CONTEXT, lengths=(1, 0.5, 0.5, 0.5), selector="learned")
    argv = ["ask", "--model", str(tiny_model), "--question", "How large?", "--context", CONTEXT]
    assert main([*argv, "--selector", "learned"]) == 2
    assert "has no learned selector" in capsys.readouterr().err


def test_selector_choice_in_the_api_and_the_cli(tiny_selector_model, squad_file, capsys):
    import json

    qa = QuestionAnswerer.from_pretrained(tiny_selector_model)
    lengths = (0.6, 0.5, 0.5, 0.4)
    learned = qa.evaluate(qa_examples(squad_file), lengths=lengths)
    attention = qa.evaluate(qa_examples(squad_file), lengths=lengths, selector="attention")
    assert (learned.selector, attention.selector) == ("learned", "attention")
    # the cost model counts the scorers at the dropping layers
    assert learned.gflops_per_window > attention.gflops_per_window
    argv = [
        "eval",
        "--model",
        str(tiny_selector_model),
        "--data",
        str(squad_file),
        "--lengths",
        "0.6,0.5,0.5,0.4",
    ]
    for selector, expected in (("learned", learned), ("attention", attention)):
        assert main([*argv, "--selector", selector, "--json", "--quiet"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["selector"] == selector
        assert report["gflops_per_window"] == pytest.approx(expected.gflops_per_window)
        assert report["f1"] == pytest.approx(expected.f1)


def qa_examples(path):
    from dynamic_tinybert import read_squad

    return read_squad(path)


def test_answer_region_is_a_distribution_over_the_context_around_the_answer():
    T = 40
    context = torch.zeros(1, T, dtype=torch.bool)
    context[0, 10:39] = True
    start = torch.full((1, T), -20.0)
    end = torch.full((1, T), -20.0)
    start[0, 20], end[0, 23] = 20.0, 20.0  # the answer is tokens 20..23
    region = answer_region(start, end, context, radius=2.0)[0]
    assert float(region.sum()) == pytest.approx(1.0)
    assert (region[~context[0]] == 0).all()
    inside = region[20:24]
    assert inside.min() > region[19] > region[17] > region[14]
    assert inside.min() > region[24] > region[27]


def test_selector_loss_is_lowest_when_the_scores_follow_the_target():
    context = torch.tensor([[False, True, True, True, True]])
    target = torch.tensor([[0.0, 0.1, 0.8, 0.1, 0.0]])
    good = selector_loss(torch.tensor([[0.0, 0.0, 3.0, 0.0, -3.0]]), target, context)
    bad = selector_loss(torch.tensor([[0.0, 3.0, -3.0, 0.0, 0.0]]), target, context)
    assert good < bad
    # rows without context tokens are left out rather than giving NaN
    nothing = torch.zeros(1, 5, dtype=torch.bool)
    assert float(selector_loss(torch.zeros(1, 5), torch.zeros(1, 5), nothing)) == 0.0


def test_fixed_scores_rank_the_context_at_every_dropping_layer(tiny_model):
    """The oracle's mechanism: a ranking given from outside decides what each layer keeps."""
    net, _, _ = checkpoint.load(tiny_model)
    n = 45
    batch = random_batch(net.config.vocab_size, [n])
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])[0]
    scores = torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    kept = kept_per_layer(net, batch, (0.8, 0.6, 0.6, 0.5), fixed_scores=scores)
    forced = int((~context).sum())
    for layer, share in zip(kept, (0.8, 0.6, 0.5), strict=True):
        best = scores[0].masked_fill(~context, -torch.inf).topk(kept_tokens(n, share) - forced).indices
        assert layer == sorted([p for p in range(n) if not context[p]] + best.tolist())


def test_fixed_scores_per_layer_mix_the_fixed_ranking_and_the_learned_selector(tiny_model):
    """selector_report's oracle at one layer: the fixed ranking decides there, the learned
    selector at the other layers, and a ranking for every layer (or none) is the usual pass."""
    net, _ = with_random_selector(tiny_model)
    n, lengths = 45, (0.8, 0.6, 0.6, 0.5)
    batch = random_batch(net.config.vocab_size, [n])
    context = context_tokens(batch["attention_mask"], batch["token_type_ids"])[0]
    fixed = torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    learned = kept_per_layer(net, batch, lengths)
    oracle = kept_per_layer(net, batch, lengths, fixed_scores=fixed)
    assert learned != oracle  # the two rankings keep different tokens
    assert kept_per_layer(net, batch, lengths, fixed_scores=[None] * 4) == learned
    assert kept_per_layer(net, batch, lengths, fixed_scores=[fixed] * 4) == oracle
    # the fixed ranking at the first layer only: its choice is the oracle's, and the selector's
    # choices after it are made among what the oracle kept
    mixed = kept_per_layer(net, batch, lengths, fixed_scores=[fixed, None, None, None])
    assert mixed[0] == oracle[0]
    assert all(set(later) <= set(mixed[0]) for later in mixed[1:])
    assert mixed != oracle and mixed != learned
    forced = [p for p in range(n) if not context[p]]
    assert all(set(forced) <= set(layer) for layer in mixed)
    with pytest.raises(ValueError, match="fixed scores for 3 layers, not 4"):
        net(**batch, lengths=lengths, fixed_scores=[fixed] * 3)
    plain, _, _ = checkpoint.load(tiny_model)  # no selector: every layer needs a fixed ranking
    with pytest.raises(SelectorError, match="no learned selector"):
        plain(**batch, lengths=lengths, fixed_scores=[fixed, None, None, None])


TYDIQA = SHARED_DATA / "train" / "tydiqa_goldp_en_train.json"


@pytest.mark.skipif(not TYDIQA.is_file(), reason=f"data not found at {TYDIQA}")
def test_first_scorer_probe_measures_what_the_first_layer_keeps(tiny_selector_model, tmp_path, capsys):
    """scripts/first_scorer_probe.py: the share of the answer region it says the first layer
    keeps is what the model's first layer keeps at that share; it trains a fresh scorer and
    caches the windows."""
    from dynamic_tinybert import read_squad
    from dynamic_tinybert.data import collate
    from dynamic_tinybert.selector import answer_region, context_tokens

    probe = load_script("first_scorer_probe")

    net, tokenizer, _ = checkpoint.load(tiny_selector_model)
    examples = read_squad(TYDIQA)[:6]
    windows = sorted(probe.encoded(tokenizer, examples), key=len)
    cases = probe.first_layer_cases(net, windows, dtype=torch.float32)
    assert len(cases) == len(windows)
    for case, window in zip(cases, windows, strict=True):
        batch = collate([window], torch.device("cpu"))
        with torch.no_grad():
            full = net(**batch)
        context = context_tokens(batch["attention_mask"], batch["token_type_ids"])
        target = answer_region(full.start_logits, full.end_logits, context)[0]
        assert torch.allclose(case["target"], target)
        [states, target_, context_, valid] = next(probe.batches([case], 1))
        with torch.no_grad():
            scores = net.selector.scorers[0](states, valid & ~context_, valid)
        for share in probe.SHARES:
            kept = kept_per_layer(net, batch, (share,) * 4)[0]  # the first layer's choice
            in_context = [p for p in kept if context[0, p]]
            expected = float(target[in_context].sum())
            measured = probe.region_kept(scores, target_, context_, valid, share)
            assert float(measured[0]) == pytest.approx(expected)

    cache = tmp_path / "cache.pt"
    data = str(TYDIQA)
    argv = [
        "--model",
        str(tiny_selector_model),
        "--data",
        data,
        "--windows",
        "64",
        "--heldout-limit",
        "10",
        "--epochs",
        "2",
        "--cache",
        str(cache),
        "--shipped",
    ]
    probe.main(argv)
    first = capsys.readouterr().out.splitlines()
    assert first[0].startswith("64 training windows,") and first[1].startswith("the model's own: ce ")
    assert [line.split(":")[0] for line in first[2:]] == ["epoch 1", "epoch 2"]
    assert cache.is_file()
    compute, probe.first_layer_cases = probe.first_layer_cases, None  # the second run reads the cache
    probe.main(argv)
    assert capsys.readouterr().out.splitlines() == first
    # a run of other settings computes its own cases, and does not take the cached ones
    probe.first_layer_cases = compute
    argv[argv.index("--windows") + 1] = "32"
    probe.main(argv)
    out, err = capsys.readouterr()
    assert out.startswith("32 training windows,") and "holds the cases of other settings" in err
