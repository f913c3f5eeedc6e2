"""Moving models to and from the leased accelerator (scripts/accelerator.py), and the whole lease
rehearsed on tiny models (training/accelerator/rehearse.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dynamic_tinybert import QuestionAnswerer, checkpoint

from .conftest import SHARED_DATA, load_script, make_checkpoint, with_random_selector

REPO = Path(__file__).parents[1]
accelerator = load_script("accelerator")


@pytest.fixture
def model_with_selector(tmp_path) -> Path:
    start = make_checkpoint(tmp_path / "start", seed=3)
    net, tokenizer = with_random_selector(start)
    checkpoint.save(net, tokenizer, tmp_path / "model")
    return tmp_path / "model"


def test_int8_trip_keeps_every_weight_within_half_a_step_and_the_rest_exact(model_with_selector, tmp_path):
    parts = accelerator.pack([model_with_selector], tmp_path / "parts" / "m", "int8", xz=True, part_mb=0.05)
    assert len(parts) > 1 and all(p.stat().st_size <= 50_000 for p in parts)
    out = tmp_path / "back"
    accelerator.unpack(tmp_path / "parts" / "m", out)
    before, after = load_file(model_with_selector / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        restored = after[name]
        assert restored.shape == tensor.shape
        if tensor.is_floating_point() and tensor.dim() >= 2:
            groups = accelerator._groups(tensor.float())
            step = groups.abs().amax(dim=2, keepdim=True) / 127
            error = (accelerator._groups(restored) - groups).abs()
            assert bool((error <= step / 2 + 1e-7).all()), name
        else:
            assert torch.equal(restored, tensor), name
    # the selector and the tokenizer travel byte for byte
    for name in ("selector.safetensors", "tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (model_with_selector / name).read_bytes()
    # and the model still answers as it did, to within the rounding
    qa, qa_back = QuestionAnswerer.from_pretrained(model_with_selector), QuestionAnswerer.from_pretrained(out)
    question, context = "who wrote it?", "the book was written by ada lovelace in london."
    assert (
        qa(question=question, context=context)["answer"]
        == qa_back(question=question, context=context)["answer"]
    )


def test_fp16_trip_gives_the_half_precision_weights(model_with_selector, tmp_path):
    accelerator.pack([model_with_selector], tmp_path / "p" / "m", "fp16", xz=False, part_mb=16)
    accelerator.unpack(tmp_path / "p" / "m", tmp_path / "back")
    before, after = (
        load_file(model_with_selector / "model.safetensors"),
        load_file(tmp_path / "back" / "model.safetensors"),
    )
    assert all(torch.equal(after[k], v.half() if v.is_floating_point() else v) for k, v in before.items())


def test_missing_or_corrupted_parts_are_named(model_with_selector, tmp_path, capsys):
    prefix = tmp_path / "p" / "m"
    parts = accelerator.pack([model_with_selector], prefix, "keep", xz=False, part_mb=0.1)
    data = bytearray(parts[1].read_bytes())
    data[10] ^= 1
    parts[1].write_bytes(bytes(data))
    assert accelerator.main(["unpack", str(prefix), str(tmp_path / "back")]) == 2
    assert f"part {parts[1]} is corrupted" in capsys.readouterr().err
    parts[1].unlink()
    with pytest.raises(accelerator.TransferError, match=f"part {parts[1]} is missing"):
        accelerator.unpack(prefix, tmp_path / "back")
    assert not (tmp_path / "back" / "model.safetensors").exists()


def test_calls_share_the_parts_out_in_order_within_each_calls_room(tmp_path):
    files = []
    for i, size in enumerate([400_000, 300_000, 300_000, 500_000, 100_000]):
        path = tmp_path / "parts" / f"f{i}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * size)
        files.append(path)
    groups = accelerator.distribute(files, tmp_path / "calls", limit_mb=1.0, reserved=2**20 - 750_000)
    assert [[p.name for p in g] for g in groups] == [["f0", "f1"], ["f2"], ["f3", "f4"]]
    assert sorted(p.name for p in (tmp_path / "calls" / "c3").iterdir()) == ["f3", "f4"]
    big = tmp_path / "big"
    big.write_bytes(b"x" * 800_000)
    with pytest.raises(accelerator.TransferError, match="larger than one call carries"):
        accelerator.distribute([big], tmp_path / "calls2", limit_mb=1.0, reserved=2**20 - 750_000)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "squad" / "dev-v1.1.json").is_file(), reason="data not found")
def test_the_whole_lease_rehearsed_on_tiny_models_ends_with_both_students_fetched(tmp_path):
    """prepare.sh, every call as the accelerator runs it (a smoke run, the teacher's parts over two
    calls, the chain started and followed, two students' starts distilled side by side from the one
    teacher, both fetched), on the CPU."""
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(REPO / "training" / "accelerator" / "rehearse.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list((tmp_path / "xfer").iterdir())) >= 3  # the parts travelled over several calls
    assert (tmp_path / "root" / "smoke.rc").read_text().strip() == "0"
    for start in ("student", "b8"):
        qa = QuestionAnswerer.from_pretrained(tmp_path / "fetched" / start)
        assert qa.model.selector is not None
        assert qa(question="who wrote it?", context="it was written by ada lovelace.")["answer"]
    with tarfile.open(tmp_path / "out1" / "logs.tgz") as logs:
        names = logs.getnames()
        chain = logs.extractfile("chain.log").read().decode()
        teacher = json.loads(logs.extractfile("recipe/teacher-dev.json").read())
        assert "chain: exit 0" in chain and teacher["questions"] >= 24
        assert "recipe/finetune/metrics.jsonl" in names
        # "b8:student2=1e-4@8": the package student2 distilled as b8, at batch 8
        for start, package, lr, batch in (("student", "student", 5e-5, 32), ("b8", "student2", 1e-4, 8)):
            assert {f"recipe/{start}/{s}/metrics.jsonl" for s in ("prediction", "selector")} <= set(names)
            assert f"recipe/{start}/lengthdrop/metrics.jsonl" not in names  # LENGTHDROP=0
            # prediction-layer distillation starts from each start, at its own rate, from the one teacher
            settings = json.loads(logs.extractfile(f"recipe/{start}/prediction/metrics.jsonl").readline())
            settings = settings["settings"]
            assert settings["model"] == str(tmp_path / "root" / "models" / package)
            assert settings["lr"] == lr and settings["batch_size"] == batch
            assert settings["teacher"] == str(tmp_path / "root" / "recipe" / "finetune")
