"""Training: every stage overfits 16 questions, resuming after SIGKILL, two processes, teachers."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dynamic_tinybert import QuestionAnswerer, checkpoint, read_squad
from dynamic_tinybert.data import collate
from dynamic_tinybert.distill import layer_map
from dynamic_tinybert.lengths import geometric_with_mean
from dynamic_tinybert.stages import StepContext, Trainee, intermediate_step, prediction_step
from dynamic_tinybert.train_settings import TrainingError, TrainSettings

from .conftest import FIXTURES, SHARED_DATA, kept_per_layer, load_script, make_checkpoint

TRAIN_FILE = SHARED_DATA / "train" / "squadshifts_new_wiki.json"
PRETRAINED = Path(os.environ.get("DYNAMIC_TINYBERT_PRETRAINED", Path(__file__).parents[1] / ".pretrained"))

pytestmark = pytest.mark.skipif(not TRAIN_FILE.is_file(), reason=f"training data not found at {TRAIN_FILE}")


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory) -> Path:
    """16 questions of the training data with short answers that match their contexts."""
    return sixteen_questions(tmp_path_factory.mktemp("data"))


def sixteen_questions(folder: Path) -> Path:
    """folder/sixteen.json: 16 questions of the training data with short answers that match
    their contexts."""
    document = json.loads(TRAIN_FILE.read_text())
    article = document["data"][0]
    paragraphs, count = [], 0

    def usable(qa: dict, context: str) -> bool:
        answer = qa["answers"][0]
        start = answer["answer_start"]
        return (
            context[start : start + len(answer["text"])] == answer["text"]
            and len(answer["text"].split()) <= 6
        )

    for paragraph in article["paragraphs"]:
        qas = [q for q in paragraph["qas"] if usable(q, paragraph["context"])][: 16 - count]
        if qas:
            paragraphs.append({"context": paragraph["context"], "qas": qas})
            count += len(qas)
        if count == 16:
            break
    path = folder / "sixteen.json"
    path.write_text(json.dumps({"data": [{"title": article["title"], "paragraphs": paragraphs}]}))
    return path


def train(*args: str) -> Path:
    """Run `dynamic-tinybert train` in-process; returns the output folder."""
    from dynamic_tinybert.cli import main

    assert main(["train", "--quiet", *args]) == 0
    return Path(args[args.index("--output") + 1])


def exact_match(folder: Path, data: Path, lengths=None) -> float:
    return QuestionAnswerer.from_pretrained(folder).evaluate(read_squad(data), lengths=lengths).exact_match


def common(data: Path, output: Path, steps: int, lr: float = 1e-3) -> list[str]:
    return [
        "--data",
        str(data),
        "--heldout",
        str(data),
        "--output",
        str(output),
        "--max-steps",
        str(steps),
        "--batch-size",
        "8",
        "--lr",
        str(lr),
        "--warmup",
        "0.05",
        "--save-steps",
        str(steps),
        "--dropout",
        "0",
    ]


@pytest.fixture(scope="module")
def teacher(sixteen, tmp_path_factory) -> Path:
    start = make_checkpoint(tmp_path_factory.mktemp("teacher-start"), seed=5)
    return train(
        "--stage",
        "finetune",
        "--model",
        str(start),
        *common(sixteen, tmp_path_factory.mktemp("teacher") / "out", 120),
    )


def test_finetune_overfits(teacher, sixteen):
    assert exact_match(teacher, sixteen) == 100.0
    # the split checkpoints were selected on is kept for the search
    assert [e.id for e in read_squad(teacher / "heldout.json")] == [e.id for e in read_squad(sixteen)]


@pytest.fixture(scope="module")
def distilled(teacher, sixteen, tmp_path_factory) -> tuple[Path, Path]:
    """A narrower, shallower student after intermediate-layer, then prediction-layer distillation."""
    start = make_checkpoint(
        tmp_path_factory.mktemp("student"),
        seed=7,
        hidden_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=64,
    )
    return distill(start, teacher, sixteen, tmp_path_factory.mktemp("distilled"), steps=(300, 100))


def distill(
    start: Path, teacher: Path, data: Path, folder: Path, steps: tuple[int, int]
) -> tuple[Path, Path]:
    """(intermediate, prediction): `start` after intermediate-layer distillation from `teacher`,
    then after prediction-layer distillation, for the given steps of each."""
    teaching = ("--teacher", str(teacher))
    intermediate = train(
        "--stage",
        "intermediate",
        "--model",
        str(start),
        *teaching,
        *common(data, folder / "id", steps[0], lr=3e-3),
    )
    prediction = train(
        "--stage",
        "prediction",
        "--model",
        str(intermediate),
        *teaching,
        *common(data, folder / "pd", steps[1]),
    )
    return intermediate, prediction


def test_intermediate_distillation_overfits(distilled, sixteen):
    intermediate, _ = distilled
    # the student's head is the teacher's, through the learned projection
    assert exact_match(intermediate, sixteen) == 100.0
    assert not any("projection" in k for k in load_file(intermediate / "model.safetensors"))


def test_prediction_distillation_overfits(distilled, sixteen):
    assert exact_match(distilled[1], sixteen) == 100.0


def test_lengthdrop_overfits_at_full_length_and_when_dropping(distilled, sixteen, tmp_path):
    out = train("--stage", "lengthdrop", "--model", str(distilled[1]), *common(sixteen, tmp_path / "ld", 80))
    assert exact_match(out, sixteen) == 100.0
    assert exact_match(out, sixteen, lengths=(0.9, 0.8)) == 100.0
    # checkpoints are selected on the full model and the smallest configuration together
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in log if "heldout_f1" in r]
    last = evaluations[-1]
    assert last["selection_f1"] == (last["heldout_f1"] + last["heldout_f1_smallest"]) / 2
    assert max(r["selection_f1"] for r in evaluations) == last["best_f1"]


def test_heldout_sample_script_gives_the_numbers_a_run_logs(distilled, sixteen, tmp_path, capsys):
    out = train("--stage", "lengthdrop", "--model", str(distilled[1]), *common(sixteen, tmp_path / "ld", 4))
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    module = load_script("heldout_sample_f1")
    capsys.readouterr()
    module.main([str(out), "--heldout", str(out / "heldout.json")])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row == f"| {out} | {last['heldout_f1']:.2f} | {last['heldout_f1_smallest']:.2f} |"


def test_heldout_split_script_writes_the_questions_a_stage_holds_out(tiny_model, sixteen, tmp_path):
    run = common(sixteen, tmp_path / "run", 1)
    del run[2:4]  # no --heldout: the stage cuts its own split from the training file
    out = train("--stage", "finetune", "--model", str(tiny_model), *run)
    load_script("heldout_split").main([str(tmp_path / "split.json"), str(sixteen)])
    written = [e.id for e in read_squad(tmp_path / "split.json")]
    assert written == [e.id for e in read_squad(out / "heldout.json")]
    assert 0 < len(written) < 16


def test_heldout_sample_script_gives_the_selector_stages_number(selector_trained, capsys):
    log = [json.loads(line) for line in (selector_trained / "metrics.jsonl").read_text().splitlines()]
    [evaluation] = [r for r in log if "heldout_f1_selector" in r]
    module = load_script("heldout_sample_f1")
    capsys.readouterr()
    heldout = str(selector_trained / "heldout.json")
    module.main(
        [str(selector_trained), "--heldout", heldout, "--stage", "selector", "--selector-share", "0.4"]
    )
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row == f"| {selector_trained} | {evaluation['heldout_f1_selector']:.2f} |"


@pytest.fixture(scope="module")
def selector_trained(teacher, sixteen, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("selector") / "out"
    return train(
        "--stage",
        "selector",
        "--model",
        str(teacher),
        "--selector-share",
        "0.4",
        "--selector-cascade",
        "1",
        "--length-ratio",
        "0.6",
        *common(sixteen, out, 60, 3e-3),
    )


def test_selector_stage_trains_the_selector_alone_to_keep_the_answer(selector_trained, teacher, sixteen):
    start, _, _ = checkpoint.load(teacher)
    trained, tokenizer, _ = checkpoint.load(selector_trained)
    assert trained.selector is not None
    # the encoder is frozen: every weight of the model is as it was
    for name, weight in start.state_dict().items():
        assert torch.equal(weight, trained.state_dict()[name]), name
    # how often the last layer still holds the full model's answer when each layer keeps 0.4 of
    # the tokens: the learned selector keeps it, attention received does not (restored states
    # let this overfit model answer well either way, so F1 alone would not tell them apart)
    lengths = (0.4, 0.4, 0.4, 0.4)
    examples = read_squad(sixteen)
    windows = tokenizer.encode_windows([e.question for e in examples], [e.context for e in examples])
    kept_answers = {"learned": 0, "attention": 0}
    for [window] in windows:
        batch = collate([window], torch.device("cpu"))
        with torch.no_grad():
            full = trained(**batch)
        answer = range(int(full.start_logits.argmax()), int(full.end_logits.argmax()) + 1)
        for selector in kept_answers:
            last = kept_per_layer(trained, batch, lengths, selector=selector)[-1]
            kept_answers[selector] += all(t in last for t in answer)
    assert kept_answers["learned"] >= 15 and kept_answers["attention"] <= 8, kept_answers
    qa = QuestionAnswerer.from_pretrained(selector_trained)
    learned = qa.evaluate(examples, lengths=lengths)
    assert learned.selector == "learned"
    assert learned.f1 >= 80
    # checkpoints are selected on the held-out F1 where every layer drops tokens (so that every
    # layer's scorer counts), keeping --selector-share of them on average
    log = [json.loads(line) for line in (selector_trained / "metrics.jsonl").read_text().splitlines()]
    [evaluation] = [r for r in log if "heldout_f1_selector" in r]
    selection = geometric_with_mean(0.4, 4)
    assert evaluation["selector_lengths"] == list(selection) and len(set(selection)) == 4
    assert evaluation["heldout_f1_selector"] == pytest.approx(qa.evaluate(examples, lengths=selection).f1)


def test_lengthdrop_with_a_selector_drops_what_it_selects_and_keeps_training_it(
    selector_trained, sixteen, tmp_path, monkeypatch
):
    from dynamic_tinybert import model as model_module

    used = []
    original = model_module.DynamicBertForQuestionAnswering._rank
    monkeypatch.setattr(
        model_module.DynamicBertForQuestionAnswering,
        "_rank",
        lambda *a, **k: used.append(1) or original(*a, **k),
    )
    out = train(
        "--stage", "lengthdrop", "--model", str(selector_trained), *common(sixteen, tmp_path / "ld", 6)
    )
    assert used, "the sub-models did not drop by the learned selector"
    before, _, _ = checkpoint.load(selector_trained)
    after, _, _ = checkpoint.load(out)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before.selector.parameters(), after.selector.parameters(), strict=True)
    ]
    assert any(changed), "LengthDrop left the selector behind the encoder"


def test_the_selector_learns_on_its_own_cascade_too(selector_trained, sixteen):
    """--selector-cascade N: N sub-models per step drop tokens by the selector, and the scores
    of each dropping layer are trained on what earlier layers left it. A sub-model that keeps
    everything (--length-ratio 1) adds nothing to the loss."""
    import numpy as np

    from dynamic_tinybert.stages import freeze_for_selector, selector_step
    from dynamic_tinybert.train_settings import TrainSettings

    model, tokenizer, _ = checkpoint.load(selector_trained)
    freeze_for_selector(model, TrainSettings(stage="selector", model="", data=[], output=""))
    examples = read_squad(sixteen)
    encoded = tokenizer.encode_windows([e.question for e in examples], [e.context for e in examples])
    batch = collate([w for ws in encoded for w in ws][:8], torch.device("cpu"))
    params = list(model.selector.parameters())

    def gradients(**options) -> tuple[float, list[torch.Tensor]]:
        model.selector.zero_grad()
        settings = TrainSettings(stage="selector", model="", data=[], output="", **options)
        loss = selector_step(
            Trainee(model), batch, {}, StepContext(settings, None, None, np.random.default_rng(0))
        )
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in params]

    plain, teacher_forced = gradients()
    assert gradients(selector_cascade=2, length_ratio=1.0)[0] == plain
    cascade, both = gradients(selector_cascade=2, length_ratio=0.5)
    assert cascade > plain
    assert any(not torch.allclose(a, b) for a, b in zip(both, teacher_forced, strict=True))


def test_selector_layers_train_only_their_scorers_with_their_dropout(selector_trained, sixteen):
    """--selector-layers 2: only the second scorer trains (teacher-forced and on its cascade),
    the others keep their weights and get no gradient; --selector-dropout acts on the trained
    scorers in training only; --selector-fresh starts them anew."""
    import argparse

    import numpy as np

    from dynamic_tinybert.options import add_dataclass_options, settings_from
    from dynamic_tinybert.stages import freeze_for_selector, selector_step
    from dynamic_tinybert.train_settings import TrainingError, TrainSettings

    def settings(**options) -> TrainSettings:
        return TrainSettings(stage="selector", model="", data=[], output="", **options)

    model, tokenizer, _ = checkpoint.load(selector_trained)
    saved = [s.state_dict() for s in model.selector.scorers]
    chosen = settings(selector_layers=[2], selector_dropout=0.5, selector_cascade=1, length_ratio=0.5)
    freeze_for_selector(model, chosen)
    examples = read_squad(sixteen)
    encoded = tokenizer.encode_windows([e.question for e in examples], [e.context for e in examples])
    batch = collate([w for ws in encoded for w in ws][:8], torch.device("cpu"))
    model.train()
    loss = selector_step(Trainee(model), batch, {}, StepContext(chosen, None, None, np.random.default_rng(0)))
    loss.backward()
    for i, scorer in enumerate(model.selector.scorers):
        grads = [p.grad for p in scorer.parameters()]
        if i == 1:
            assert all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)
            assert scorer.dropout == 0.5
        else:
            assert all(g is None for g in grads) and scorer.dropout == 0.0
    # dropout in training only
    states = torch.randn(2, 10, model.config.hidden_size)
    question = torch.zeros(2, 10, dtype=torch.bool)
    question[:, :3] = True
    valid = torch.ones(2, 10, dtype=torch.bool)
    scorer = model.selector.scorers[1]
    assert not torch.equal(scorer(states, question, valid), scorer(states, question, valid))
    scorer.eval()
    assert torch.equal(scorer(states, question, valid), scorer(states, question, valid))
    # fresh: the trained scorer starts anew, the others are the model's
    model, _, _ = checkpoint.load(selector_trained)
    freeze_for_selector(model, settings(selector_layers=[1], selector_fresh=True))
    after = [s.state_dict() for s in model.selector.scorers]
    assert not torch.equal(after[0]["out.weight"], saved[0]["out.weight"])
    assert all(torch.equal(after[i][k], saved[i][k]) for i in range(1, len(saved)) for k in saved[i])
    # errors: a layer the model lacks, layers counted from 0, the option on another stage
    with pytest.raises(TrainingError, match="has 4 layers"):
        freeze_for_selector(model, settings(selector_layers=[5]))
    for bad in (settings(selector_layers=[0]), settings(selector_dropout=1.0)):
        with pytest.raises(TrainingError):
            bad.check()
    with pytest.raises(TrainingError, match="--stage selector"):
        TrainSettings(stage="lengthdrop", model="", data=[], output="", selector_layers=[1]).check()
    # the options are part of the resume key (a run resumes with the scorers it trained)
    assert (
        chosen.resume_key()["selector_layers"] == [2] and settings().resume_key()["selector_layers"] is None
    )
    assert settings().resume_differences(chosen.resume_key()) == [
        "--selector-cascade 1 there, 0 now",
        "--length-ratio 0.5 there, 0.8 now",
        "--selector-layers 2 there, (not given) now",
        "--selector-dropout 0.5 there, 0.0 now",
    ]
    # on the command line, the layers are numbers
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, TrainSettings)
    required = ["--stage", "selector", "--model", "m", "--data", "d", "--output", "o"]
    args = parser.parse_args([*required, "--selector-layers", "1", "3"])
    assert settings_from(args, TrainSettings).selector_layers == [1, 3]


def test_distillation_losses_are_zero_when_the_student_is_the_teacher(teacher, sixteen):
    from dynamic_tinybert.data import collate
    from dynamic_tinybert.train_settings import TrainSettings

    model, tokenizer, _ = checkpoint.load(teacher)
    examples = read_squad(sixteen)
    encoded = tokenizer.encode_windows([e.question for e in examples], [e.context for e in examples])
    windows = [w for ws in encoded for w in ws]

    batch = collate(windows[:8], torch.device("cpu"))
    settings = TrainSettings(stage="prediction", model="", data=[], output="")
    ctx = StepContext(settings, model, layer_map(4, 4), rng=None)
    with torch.no_grad():
        assert float(intermediate_step(Trainee(model), batch, {}, ctx)) == 0.0
        assert float(prediction_step(Trainee(model), batch, {}, ctx)) == 0.0
        # a student one perturbed weight matrix away from its teacher is told so by both losses
        student = copy.deepcopy(model)
        weight = student.layers[0].ffn_out.weight
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
        weight.add_(0.05 * noise)  # not a constant: the layer norm after it would cancel a constant
        assert float(intermediate_step(Trainee(student), batch, {}, ctx)) > 1e-6
        assert float(prediction_step(Trainee(student), batch, {}, ctx)) > 1e-6


def test_saved_student_loads_in_transformers_with_the_core_logits(distilled):
    from transformers import AutoModelForQuestionAnswering

    ours, _, _ = checkpoint.load(distilled[1])
    theirs = AutoModelForQuestionAnswering.from_pretrained(distilled[1]).eval()
    ids = torch.randint(5, ours.config.vocab_size, (2, 40))
    with torch.no_grad():
        a, b = ours(ids), theirs(input_ids=ids)
    assert torch.allclose(a.start_logits, b.start_logits, atol=1e-4)
    assert torch.allclose(a.end_logits, b.end_logits, atol=1e-4)


def _command(start: Path, data: Path, output: Path, *extra: str, stage: str = "lengthdrop") -> list[str]:
    return [
        sys.executable,
        "-m",
        "dynamic_tinybert",
        "train",
        "--quiet",
        "--stage",
        stage,
        "--model",
        str(start),
        "--data",
        str(data),
        "--heldout",
        str(data),
        "--output",
        str(output),
        "--max-steps",
        "24",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--save-steps",
        "4",
        "--seed",
        "3",
        *extra,
    ]


def _final_weights(output: Path) -> dict[str, torch.Tensor]:
    [state] = sorted((output / "trainer").glob("step-*"))
    return load_file(state / "trainee.safetensors")


def _contents(path: Path) -> tuple[dict, dict]:
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    return metadata, {name: tensor.tolist() for name, tensor in load_file(path).items()}


@contextmanager
def interrupted(after: int):
    """Ctrl-C in the training loop once `after` optimizer steps are done, in the runs inside."""
    from dynamic_tinybert import train as train_module

    original = train_module._optimizer_step

    def step(run, *args):
        if run.state.step == after:
            raise KeyboardInterrupt
        return original(run, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_optimizer_step", step)
        yield


def _finetune(data: Path, *extra: str) -> list[str]:
    return [
        *("train", "--quiet", "--stage", "finetune", "--data", str(data), "--heldout", str(data)),
        *("--max-steps", "6", "--batch-size", "4", "--save-steps", "2", "--lr", "1e-3", *extra),
    ]


def test_a_run_resumed_on_another_device_or_process_count_says_so(tiny_model, sixteen, tmp_path, capsys):
    """--device and the process count may change on resume (a lease ends, a run moves), but the
    weights may then differ in the last digits from an uninterrupted run's: the run says so."""
    from dynamic_tinybert.cli import main

    args = [*_finetune(sixteen, "--model", str(tiny_model), "--output", str(tmp_path / "out"))]
    args[args.index("--max-steps") + 1] = "8"
    with interrupted(3):
        assert main(args) == 130
    progress = next((tmp_path / "out" / "trainer").glob("step-*/progress.json"))
    assert json.loads(progress.read_text())["machine"] == "cpu, 1 process"
    with interrupted(5):  # on the machine it was saved on: nothing to say
        assert main(args) == 130
    assert "resuming on" not in capsys.readouterr().err
    progress = next((tmp_path / "out" / "trainer").glob("step-*/progress.json"))
    progress.write_text(json.dumps(json.loads(progress.read_text()) | {"machine": "cuda, 2 processes"}))
    assert main(args) == 0
    assert "resuming on cpu, 1 process a run saved on cuda, 2 processes" in capsys.readouterr().err


def test_a_resumed_run_must_share_every_setting_that_changes_its_result(
    tiny_model, sixteen, tmp_path, capsys, monkeypatch
):
    """A run stopped by Ctrl-C resumes only with the settings that give the weights an
    uninterrupted run gets; the refusal names each setting that differs. The same folders
    named another way (./tiny, an absolute path) and settings that change nothing (--max-minutes,
    --log-steps) resume."""
    from dynamic_tinybert.cli import main

    whole, out = tmp_path / "whole", tmp_path / "out"
    assert main([*_finetune(sixteen, "--model", str(tiny_model), "--output", str(whole))]) == 0
    with interrupted(after=3):
        assert main([*_finetune(sixteen, "--model", str(tiny_model), "--output", str(out))]) == 130
    other = tmp_path / "other.json"
    other.write_text(sixteen.read_text())
    changed = ["--warmup", "0.5", "--dropout", "0", "--grad-accum", "2", "--heldout", str(other)]
    capsys.readouterr()
    assert main([*_finetune(sixteen, "--model", str(tiny_model), "--output", str(out), *changed)]) == 2
    error = capsys.readouterr().err
    for difference in (
        "--warmup 0.1 there, 0.5 now",
        "--dropout (not given) there, 0.0 now",
        "--grad-accum 1 there, 2 now",
        f"--heldout {sixteen.resolve()} there, {other.resolve()} now",
    ):
        assert difference in error
    assert "another --output" in error and len(error.strip().splitlines()) == 1
    monkeypatch.chdir(tiny_model.parent)
    same = [
        "--model",
        f"./{tiny_model.name}",
        "--output",
        str(out),
        "--max-minutes",
        "60",
        "--log-steps",
        "1",
    ]
    assert main(_finetune(sixteen, *same)) == 0
    expected, got = _final_weights(whole), _final_weights(out)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_resume_compares_the_stage_settings_that_change_the_result():
    def settings(**options) -> TrainSettings:
        return TrainSettings(stage="lengthdrop", model="m", data=["d"], output="o", **options)

    saved = settings().resume_key()
    changed = settings(layerdrop=0.1, length_ratio=0.5, random_configs=1, temperature=2.0)
    assert changed.resume_differences(saved) == [
        "--temperature 1.0 there, 2.0 now",
        "--layerdrop 0.2 there, 0.1 now",
        "--length-ratio 0.8 there, 0.5 now",
        "--random-configs 2 there, 1 now",
    ]
    # logging, saving's timing and the device change nothing; a run saved before a setting was
    # recorded resumes as it did
    assert settings(log_steps=1, max_minutes=5.0, quiet=True, device="cpu").resume_differences(saved) == []
    assert changed.resume_differences({"stage": "lengthdrop", "model": "m"}) == []


def test_metrics_of_a_resumed_run_read_as_one_uninterrupted_runs(tiny_model, sixteen, tmp_path):
    """Stopped before its first save, then after a save with steps logged since, a run's
    metrics.jsonl ends as an uninterrupted run's: each record once."""
    from dynamic_tinybert.cli import main

    args = ["--model", str(tiny_model), "--max-steps", "8", "--save-steps", "5", "--log-steps", "2"]
    whole, out = tmp_path / "whole", tmp_path / "out"
    assert main([*_finetune(sixteen, *args, "--output", str(whole))]) == 0
    for after in (1, 7):
        with interrupted(after):
            assert main([*_finetune(sixteen, *args, "--output", str(out))]) == 130
    assert main([*_finetune(sixteen, *args, "--output", str(out))]) == 0
    assert _records(out) == _records(whole)
    assert [r["step"] for r in _records(whole) if "loss" in r] == [2, 4, 6, 8]


def _records(folder: Path) -> list[dict]:
    """metrics.jsonl without what varies between two runs of the same settings."""
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    varying = ("time", "examples_per_s", "settings")
    return [{k: v for k, v in json.loads(line).items() if k not in varying} for line in lines]


@contextmanager
def signalled(after: int, *signals: signal.Signals):
    """The signals sent to the process while the runs inside are in their step `after`, as Ctrl-C
    or a scheduler's SIGTERM would arrive."""
    from dynamic_tinybert import train as train_module

    original = train_module._optimizer_step

    def step(run, *args):
        loss = original(run, *args)
        if run.state.step + 1 == after:
            for signum in signals:
                signal.raise_signal(signum)
        return loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_optimizer_step", step)
        yield


@pytest.mark.parametrize(
    ("signum", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_run_stopped_by_a_signal_saves_its_step_and_resumes_to_the_same_weights(
    tiny_model, sixteen, tmp_path, capsys, signum, status, word
):
    """Ctrl-C or SIGTERM lets the step in progress end and saves the state there (step 3; the
    saves are at 5 and 8), so nothing is trained twice; the resumed run ends with the weights,
    checkpoint and metrics of a run never stopped."""
    from dynamic_tinybert.cli import main

    args = ["--model", str(tiny_model), "--max-steps", "8", "--save-steps", "5", "--log-steps", "1"]
    whole, out = tmp_path / "whole", tmp_path / "out"
    assert main([*_finetune(sixteen, *args, "--output", str(whole))]) == 0
    capsys.readouterr()
    with signalled(3, signum):
        assert main([*_finetune(sixteen, *args, "--output", str(out))]) == status
    said = f"{word} after step 3, its state saved in {out / 'trainer'}: the same command resumes from there"
    assert capsys.readouterr().err.splitlines()[-1] == said
    assert [p.name for p in (out / "trainer").glob("step-*")] == ["step-00000003"]
    from dynamic_tinybert import train as train_module

    resumed, original = [], train_module._optimizer_step

    def step(run, *args):
        resumed.append(run.state.step)
        return original(run, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_optimizer_step", step)
        assert main([*_finetune(sixteen, *args, "--output", str(out))]) == 0
    assert resumed == [3, 4, 5, 6, 7]  # steps 4 to 8, none twice
    expected, got = _final_weights(whole), _final_weights(out)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    assert (whole / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert _records(out) == _records(whole)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handlers are gone


def test_a_second_ctrl_c_stops_a_run_at_once(tiny_model, sixteen, tmp_path, capsys):
    """The user who will not wait for the step: the run stops at once, back to its last save."""
    from dynamic_tinybert.cli import main

    out = tmp_path / "out"
    with signalled(3, signal.SIGINT, signal.SIGINT):
        assert main(_finetune(sixteen, "--model", str(tiny_model), "--output", str(out))) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted"
    assert [p.name for p in (out / "trainer").glob("step-*")] == ["step-00000002"]


@pytest.mark.parametrize("stage", ["lengthdrop", "selector"])
def test_run_killed_with_sigkill_resumes_to_the_same_weights(tiny_model, sixteen, tmp_path, stage):
    whole = tmp_path / "whole"
    subprocess.run(_command(tiny_model, sixteen, whole, stage=stage), check=True, timeout=600)
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(tiny_model, sixteen, killed, stage=stage))
    deadline = time.time() + 300
    while not list((killed / "trainer").glob("step-0000001[2-9]")) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "trainer" / "step-00000024").exists()
    subprocess.run(_command(tiny_model, sixteen, killed, stage=stage), check=True, timeout=600)
    expected, got = _final_weights(whole), _final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert (whole / "model.safetensors").read_bytes() == (killed / "model.safetensors").read_bytes()
    if stage == "selector":
        # safetensors writes metadata keys in no fixed order: compare what the file holds
        assert _contents(whole / "selector.safetensors") == _contents(killed / "selector.safetensors")
    # the same command once more finds the run finished
    result = subprocess.run(
        _command(tiny_model, sixteen, killed, stage=stage), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "already finished" in result.stderr


def test_two_processes_agree_with_one_on_the_same_global_batch(tiny_model, sixteen, tmp_path):
    # fp32: bf16 rounds the two ways of summing one batch apart by more than this test allows
    extra = [
        "--dropout",
        "0",
        "--stage",
        "finetune",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--precision",
        "fp32",
    ]
    one = tmp_path / "one"
    subprocess.run(_command(tiny_model, sixteen, one, *extra), check=True, timeout=600)
    two = tmp_path / "two"  # through torchrun, as `torchrun -m dynamic_tinybert train` would be
    command = _command(tiny_model, sixteen, two, *extra, "--processes", "2")
    subprocess.run(command, check=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    ranks = [r for r in log if r.get("event") == "ranks"]
    assert ranks and ranks[0]["agree"] and ranks[0]["world"] == 2
    expected, got = _final_weights(one), _final_weights(two)
    # The span loss does not change when all of a row's logits shift together, so the QA head's
    # bias, and the last layer norm's bias through it, get gradients that are zero but for
    # rounding; Adam scales that rounding up to steps of the learning rate's size. They are
    # compared through what they compute instead.
    invariant = {"model.qa_head.bias", "model.layers.3.ffn_norm.bias"}
    for name in expected.keys() - invariant:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name
    models = [checkpoint.load(folder)[0] for folder in (one, two)]
    ids = torch.randint(5, models[0].config.vocab_size, (3, 50))
    with torch.no_grad():
        a, b = (m(ids) for m in models)
    assert torch.allclose(a.start_logits.log_softmax(-1), b.start_logits.log_softmax(-1), atol=1e-4)
    assert torch.allclose(a.end_logits.log_softmax(-1), b.end_logits.log_softmax(-1), atol=1e-4)


def test_unalignable_teacher_is_refused_before_training(tiny_model, sixteen, tmp_path, capsys):
    from dynamic_tinybert.cli import main

    other = make_checkpoint(tmp_path / "other-vocab")
    vocab = (FIXTURES / "vocab.txt").read_text().splitlines()
    (other / "vocab.txt").write_text("\n".join(vocab[:5] + vocab[5:][::-1]) + "\n")
    (other / "tokenizer.json").unlink()
    argv = ["train", "--stage", "prediction", "--model", str(tiny_model), "--teacher", str(other)]
    assert main([*argv, *common(sixteen, tmp_path / "o", 2)]) == 2
    assert "different vocabularies" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_minutes_fits_the_step_count_and_schedule_into_the_time(
    tiny_model, sixteen, tmp_path, monkeypatch
):
    """A fixed accelerator lease: the run plans 100,000 steps, is given 6 s, and ends in time with
    its learning rate decayed to zero, finished and resumable like any other run."""
    from types import SimpleNamespace

    from dynamic_tinybert import time_limit

    clock: list[float] = []

    def monotonic() -> float:
        """The time limit's clock: from the first step on, each step takes 0.1 s, however busy the
        machine (a step that ran slower than the fitted rate on a loaded CI machine cut the run one
        step before its fitted count, with the deadline, as it should on a real lease)."""
        clock.append(clock[-1] + 0.1 if clock else time.monotonic())
        return clock[-1]

    monkeypatch.setattr(time_limit, "time", SimpleNamespace(monotonic=monotonic))
    args = common(sixteen, tmp_path / "out", 100_000)
    began = time.monotonic()
    out = train("--stage", "finetune", "--model", str(tiny_model), *args, "--max-minutes", "0.1")
    took = time.monotonic() - began
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    fitted = [r for r in records if r.get("event") == "fitted to time"]
    assert fitted and all(25 < f["steps"] < 100_000 for f in fitted)
    steps = [r for r in records if "lr" in r]
    assert steps[-1]["step"] == fitted[-1]["steps"] and steps[-1]["lr"] < 0.05 * 1e-3
    # loading, the last evaluation and save fall outside the fitted steps; the fitted steps run at
    # the machine's real speed (the clock above only paces the deadline): 16.8 s once on 2 busy cores
    assert took < 6 + 24
    progress = json.loads(next((out / "trainer").glob("step-*/progress.json")).read_text())
    assert progress["finished"] and progress["total"] == fitted[-1]["steps"]


def test_the_step_count_is_refitted_as_the_rate_settles(monkeypatch):
    """Slow first steps (a GPU meeting each batch shape for the first time) must not stop the run
    early: the count is refitted each time the steps done double, on the latest half's rate."""
    from dynamic_tinybert import time_limit

    clock = [0.0]
    monkeypatch.setattr(time_limit.time, "monotonic", lambda: clock[0])
    limit = time_limit.TimeLimit(deadline=1000.0, planned=1_000_000)
    total, fits = 1_000_000, []
    for done in range(1, 401):
        clock[0] += 1.0 if done <= 25 else 0.1  # 1 step/s at first, then 10
        total, record = limit.step_count(done, done, total)
        if record:
            fits.append((done, record["steps"]))
    assert [done for done, _ in fits] == [25, 50, 100, 200, 400]
    assert fits[0][1] == 25 + int(1.0 * 975 * 0.9)  # the first fit sees the slow steps alone
    # later fits see the settled rate: 10 steps/s over the time left
    assert fits[-1][1] == 400 + int(10.0 * (1000 - clock[0]) * 0.9)
    clock[0] = 1000.0
    assert limit.step_count(401, 401, total) == (401, {"event": "out of time", "step": 401})


def test_settings_errors(tiny_model, sixteen, tmp_path, capsys):
    from dynamic_tinybert.cli import main

    assert (
        main(
            [
                "train",
                "--stage",
                "prediction",
                "--model",
                str(tiny_model),
                "--data",
                str(sixteen),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert "--teacher" in error and len(error.splitlines()) == 1 and "Traceback" not in error


def test_squad_dev_is_refused_by_content_under_any_name(sixteen, tiny_model, tmp_path, capsys):
    from dynamic_tinybert.cli import main

    # one question of SQuAD 1.1 dev (its first id) among training questions, in a file named
    # like training data
    document = json.loads(sixteen.read_text())
    document["data"][0]["paragraphs"][0]["qas"][0]["id"] = "56be4db0acb8001400a502ec"
    disguised = tmp_path / "train-extra.json"
    disguised.write_text(json.dumps(document))
    argv = ["train", "--stage", "finetune", "--model", str(tiny_model), "--data", str(disguised)]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "1 questions of SQuAD 1.1 dev" in error and "56be4db0acb8001400a502ec" in error
    assert "Traceback" not in error
    assert main(["search", "--model", str(tiny_model), "--data", str(disguised)]) == 2
    assert "SQuAD 1.1 dev" in capsys.readouterr().err
    # the data it was made from passes
    from dynamic_tinybert.train_data import load_examples

    assert len(load_examples(str(sixteen))) == 16


@pytest.mark.skipif(
    not (PRETRAINED / "all-mpnet-base-v2").is_dir(), reason="run scripts/fetch_pretrained.py first"
)
def test_mpnet_teacher_sees_the_students_wordpieces_on_real_text():
    from transformers import AutoTokenizer

    from dynamic_tinybert.stages import align
    from dynamic_tinybert.tokenizer import QATokenizer

    student = QATokenizer.from_folder(PRETRAINED / "all-MiniLM-L6-v2")
    teacher_tokenizer = AutoTokenizer.from_pretrained(PRETRAINED / "all-mpnet-base-v2")
    vocabulary = align(student, PRETRAINED / "all-mpnet-base-v2")
    teacher_windows = QATokenizer.from_folder(PRETRAINED / "all-mpnet-base-v2")
    examples = read_squad(TRAIN_FILE)[:200]
    questions, contexts = [e.question for e in examples], [e.context for e in examples]
    for ours, theirs in zip(
        student.encode_windows(questions, contexts),
        teacher_windows.encode_windows(questions, contexts),
        strict=True,
    ):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert vocabulary(torch.from_numpy(a.input_ids)).tolist() == b.input_ids.tolist()
            assert (a.offsets == b.offsets).all()
    # one separator between question and context, for both
    window = teacher_windows.encode_windows(["who?"], ["me"])[0][0]
    assert teacher_tokenizer.convert_ids_to_tokens(window.input_ids.tolist()) == [
        "<s>",
        "who",
        "?",
        "</s>",
        "me",
        "</s>",
    ]


def test_questions_whose_answer_does_not_match_are_skipped_and_logged(sixteen, tiny_model, tmp_path):
    document = json.loads(sixteen.read_text())
    broken = document["data"][0]["paragraphs"][0]["qas"][0]
    broken["answers"][0]["answer_start"] += 1
    data = tmp_path / "broken.json"
    data.write_text(json.dumps(document))
    out = train("--stage", "finetune", "--model", str(tiny_model), *common(data, tmp_path / "run", 2))
    skipped = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in skipped if r.get("event") == "skipped"]
    assert skipped and skipped[0]["ids"] == [broken["id"]] and skipped[0]["count"] == 1


def test_datasets_by_name_become_examples(monkeypatch):
    import types

    from dynamic_tinybert.train_data import load_examples

    rows = [
        {
            "id": "a1",
            "title": "T",
            "context": "The cat sat.",
            "question": "Who sat?",
            "answers": {"text": ["The cat"], "answer_start": [0]},
        }
    ]
    asked = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, split: asked.append((name, split)) or rows
    monkeypatch.setitem(sys.modules, "datasets", fake)
    [example] = load_examples("rajpurkar/squad:train")
    assert asked == [("rajpurkar/squad", "train")]
    assert (example.id, example.answers, example.answer_starts, example.title) == (
        "a1",
        ("The cat",),
        (0,),
        "T",
    )


def test_attention_dropout_is_set_alone_or_with_the_rest(tiny_model):
    from torch import nn

    from dynamic_tinybert.stages import set_dropout

    def probabilities(model):
        hidden = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
        attention = {m.attn_dropout for m in model.modules() if hasattr(m, "attn_dropout")}
        return hidden, attention

    model = checkpoint.load_qa_model(tiny_model)[0]
    (hidden,), (attention,) = probabilities(model)
    assert hidden > 0 and attention > 0
    set_dropout(model, None, 0.0)  # --attention-dropout 0
    assert probabilities(model) == ({hidden}, {0.0})
    set_dropout(model, 0.3)  # --dropout 0.3: the attention probabilities too
    assert probabilities(model) == ({0.3}, {0.3})
    set_dropout(model, 0.2, 0.05)
    assert probabilities(model) == ({0.2}, {0.05})


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("epochs", 0.0, "--epochs must be above 0"),  # 0 once meant the default 2 epochs
        ("epochs", -1.0, "--epochs must be above 0"),
        ("lr", -1.0, "--lr must be above 0"),
        ("lr", float("nan"), "--lr must be above 0"),
        ("warmup", 2.0, "--warmup must be from 0 to below 1"),
        ("dropout", 1.5, "--dropout must be from 0 to below 1"),
        ("length_ratio", 1.5, "--length-ratio must be above 0 to 1"),
        ("seed", -1, "--seed must be from 0 to 4294967295, got -1"),  # was numpy's traceback
        ("epochs", float("inf"), "--epochs must be above 0, got inf"),  # was an OverflowError
        ("lr", float("inf"), "--lr must be above 0, got inf"),  # trained to NaN
        ("max_minutes", float("nan"), "--max-minutes must be above 0, got nan"),
        ("limit", 0, "--limit must be at least 1, got 0"),  # meant every question
        ("limit", -1, "--limit must be at least 1, got -1"),  # dropped the last question
        ("random_configs", -1, "--random-configs must be at least 0"),
        ("selector_radius", float("nan"), "--selector-radius must be above 0"),
    ],
)
def test_numeric_options_out_of_range_are_refused_before_training(option, value, message):
    settings = TrainSettings(stage="finetune", model="", data=[], output="", **{option: value})
    with pytest.raises(TrainingError, match=message):
        settings.check()


def test_an_output_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(TrainingError, match="is a file"):
        TrainSettings(stage="finetune", model="", data=[], output=str(tmp_path / "file")).check()
