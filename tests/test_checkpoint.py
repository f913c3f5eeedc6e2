"""Checkpoints in the transformers layout: loading, saving, and refusing what is not one."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from dynamic_tinybert import checkpoint
from dynamic_tinybert.checkpoint import CheckpointError

from .conftest import CONTEXT, make_checkpoint, run_model_card_quick_start


def test_relu_pickle_checkpoint_loads(tiny_relu_bin):
    net, tokenizer, folder = checkpoint.load(tiny_relu_bin)
    assert net.config.hidden_act == "relu"
    assert (folder / "pytorch_model.bin").is_file()
    assert tokenizer.encode_windows(["what?"], [CONTEXT])[0]


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_saved_checkpoint_loads_in_plain_transformers_with_the_same_logits(tiny_model, tmp_path, dtype):
    from transformers import AutoModelForQuestionAnswering

    net, tokenizer, _ = checkpoint.load(tiny_model)
    saved = checkpoint.save(net, tokenizer, tmp_path / "saved", dtype=dtype)
    reference = AutoModelForQuestionAnswering.from_pretrained(saved, torch_dtype=torch.float32).eval()
    ids = torch.randint(5, net.config.vocab_size, (2, 30))
    with torch.no_grad():
        if dtype is not None:  # compare with what the stored half-precision weights give
            net, _, _ = checkpoint.load(saved)
        ours, theirs = net(ids), reference(input_ids=ids)
    assert torch.allclose(ours.start_logits, theirs.start_logits, atol=1e-4)
    assert torch.allclose(ours.end_logits, theirs.end_logits, atol=1e-4)
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    assert config["torch_dtype"] == ("float16" if dtype else "float32")


def test_model_card_quick_start_runs_unchanged_on_a_saved_checkpoint(tiny_model, tmp_path):
    net, tokenizer, _ = checkpoint.load(tiny_model)
    saved = checkpoint.save(net, tokenizer, tmp_path / "card")
    assert run_model_card_quick_start(saved).startswith("Answer:")


def test_bare_encoder_gets_a_random_head_with_a_warning(tiny_model, tmp_path, capsys):
    from transformers import BertModel

    BertModel.from_pretrained(tiny_model).save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, tmp_path)
    net, _, _ = checkpoint.load(tmp_path)
    assert "no question-answering head" in capsys.readouterr().err
    reference, _, _ = checkpoint.load(tiny_model)
    assert torch.equal(net.layers[0].query.weight, reference.layers[0].query.weight)
    head = net.qa_head  # a real, BERT-initialised head, trainable like the rest
    assert not head.weight.is_meta and head.weight.requires_grad and head.weight.dtype == torch.float32
    assert torch.equal(head.bias, torch.zeros(2)) and 0.01 < head.weight.std() < 0.03
    with pytest.raises(CheckpointError, match="no question-answering head"):
        checkpoint.load(tmp_path, require_qa_head=True)


def test_loading_builds_no_random_weights_for_the_checkpoint_to_replace(tiny_model):
    """The model is built on the meta device and takes the file's tensors: no random draws (they
    cost a third of a second of every cold start for the shipped model), no meta tensor left."""
    state = torch.random.get_rng_state()
    net, _, _ = checkpoint.load(tiny_model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(t.device.type == "cpu" for t in [*net.parameters(), *net.buffers()])
    assert all(p.requires_grad for p in net.parameters())


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_that_would_run_code_is_refused(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy(tiny_model / "config.json", folder)
    shutil.copy(tiny_model / "vocab.txt", folder)
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _RunsCode()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="cannot read the weights"):
        checkpoint.load(folder)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_weights_get_a_clear_error(tiny_model, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(folder)


def test_truncated_pickle_gets_a_clear_error(tiny_relu_bin, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(tiny_relu_bin, folder)
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "config.json").write_text('{"model_type": "mpnet"}'), "model_type is 'mpnet'"),
        (lambda f: (f / "config.json").write_text('{"model_type": "bert", "hidden_act": "swish"}'), "swish"),
        (lambda f: (f / "model.safetensors").unlink(), "has no weights"),
        (
            lambda f: [(f / n).unlink() for n in ("vocab.txt", "tokenizer.json")],
            "no tokenizer.json or vocab.txt",
        ),
    ],
)
def test_folders_that_are_not_bert_qa_checkpoints_get_clear_errors(tiny_model, tmp_path, change, message):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_model, folder)
    change(folder)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(folder)


def test_weights_that_do_not_fit_the_config_get_a_clear_error(tiny_model, tmp_path):
    folder = make_checkpoint(tmp_path / "wide", hidden_size=32, num_attention_heads=2)
    shutil.copy(tiny_model / "config.json", folder)
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint.load(folder)


def test_missing_folder_and_hub_ids(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.resolve(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="is a file"):
        checkpoint.resolve(__file__)
    asked = []

    def fake_download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(tmp_path)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert checkpoint.resolve("Intel/dynamic_tinybert") == tmp_path
    assert asked[0][0] == "Intel/dynamic_tinybert" and "config.json" in asked[0][1]

    def offline(repo_id, allow_patterns):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="downloading it from the Hugging Face Hub failed"):
        checkpoint.resolve("Intel/dynamic_tinybert")


def test_save_replaces_an_existing_folder_whole(tiny_model, tmp_path):
    net, tokenizer, _ = checkpoint.load(tiny_model)
    target = tmp_path / "out"
    checkpoint.save(net, tokenizer, target)
    (target / "stale.txt").write_text("from before")
    checkpoint.save(net, tokenizer, target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
