"""Training input that cannot give a useful run is refused before any training step, in one line
naming what is wrong; a run whose loss stops being a number ends without publishing its weights."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dynamic_tinybert.cli import main
from dynamic_tinybert.stopping import NOTICE
from dynamic_tinybert.train import train
from dynamic_tinybert.train_settings import TrainingError, TrainSettings

from .conftest import make_checkpoint
from .test_train import TRAIN_FILE, common, sixteen_questions

pytestmark = pytest.mark.skipif(not TRAIN_FILE.is_file(), reason=f"training data not found at {TRAIN_FILE}")


@pytest.fixture(scope="module")
def sixteen(tmp_path_factory) -> Path:
    return sixteen_questions(tmp_path_factory.mktemp("data"))


def refused(argv: list[str], capsys) -> str:
    """The one line `train` refuses these options with (exit code 2, no traceback)."""
    capsys.readouterr()
    assert main(["train", "--quiet", *argv]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1, error
    return error


def test_heldout_questions_without_answers_are_refused_before_training(tiny_model, sixteen, tmp_path, capsys):
    document = json.loads(sixteen.read_text())
    unanswered = document["data"][0]["paragraphs"][0]["qas"][0]
    unanswered["answers"] = []
    heldout = tmp_path / "heldout.json"
    heldout.write_text(json.dumps(document))
    args = common(sixteen, tmp_path / "out", 4)
    args[args.index("--heldout") + 1] = str(heldout)
    error = refused(["--stage", "finetune", "--model", str(tiny_model), *args], capsys)
    assert f"{heldout}: question {unanswered['id']!r} has no gold answers" in error
    assert not (tmp_path / "out").exists()  # no step was trained


def test_a_data_folder_is_refused_with_train_s_own_hint(tiny_model, sixteen, tmp_path, capsys):
    args = common(sixteen, tmp_path / "out", 4)
    args[args.index("--data") + 1] = str(sixteen.parent)
    error = refused(["--stage", "finetune", "--model", str(tiny_model), *args], capsys)
    assert f"{sixteen.parent} is a folder; give its SQuAD JSON files, one after another" in error


def test_a_teacher_whose_layers_do_not_fit_the_student_is_refused_before_training(
    tiny_model, sixteen, tmp_path, capsys
):
    six = make_checkpoint(tmp_path / "six", num_hidden_layers=6)
    argv = ["--stage", "intermediate", "--model", str(tiny_model), "--teacher", str(six)]
    error = refused([*argv, *common(sixteen, tmp_path / "out", 2)], capsys)
    assert "6-layer teacher" in error and "students of 1, 2, 3, 6 layers, not the 4" in error
    assert not (tmp_path / "out").exists()


def test_a_question_id_in_two_data_files_is_refused_naming_both(tiny_model, sixteen, tmp_path, capsys):
    copy = tmp_path / "copy.json"
    copy.write_text(sixteen.read_text())
    first = json.loads(sixteen.read_text())["data"][0]["paragraphs"][0]["qas"][0]["id"]
    run = ["--stage", "finetune", "--model", str(tiny_model), "--output", str(tmp_path / "out")]
    error = refused([*run, "--data", str(sixteen), str(sixteen)], capsys)
    assert f"--data names {sixteen} twice (question {first!r}" in error
    error = refused([*run, "--data", str(sixteen), str(copy)], capsys)
    assert f"--data: question {first!r} is in both {sixteen} and {copy}" in error
    error = refused([*run, "--data", str(sixteen), "--heldout", str(copy), str(copy)], capsys)
    assert f"--heldout names {copy} twice" in error
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_starting_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "start").mkdir()
    for output in ("start", "./start/", str(tmp_path / "start")):
        with pytest.raises(TrainingError, match="is the --model folder, which the run would overwrite"):
            TrainSettings(stage="finetune", model="start", data=["d"], output=output).check()
    teaching = TrainSettings(stage="prediction", model="m", data=["d"], output="./start", teacher="start")
    with pytest.raises(TrainingError, match="is the --teacher folder"):
        teaching.check()


def test_an_output_where_a_file_is_is_refused_before_training(tmp_path):
    (tmp_path / "a-file").write_text("")
    refusals = {"a-file": "a-file is a file; give a folder", "a-file/run": "a-file is a file, not a folder"}
    for output, words in refusals.items():
        with pytest.raises(TrainingError, match=words):
            TrainSettings(stage="finetune", model="m", data=["d"], output=str(tmp_path / output)).check()


@pytest.mark.parametrize("stage", ["finetune", "selector"])
def test_a_teacher_on_a_stage_that_learns_without_one_is_refused(stage):
    settings = TrainSettings(stage=stage, model="m", data=["d"], output="o", teacher="t")
    with pytest.raises(
        TrainingError, match=f"--teacher is an option of .*; --stage {stage} learns without one"
    ):
        settings.check()


def test_a_run_whose_loss_stops_being_a_number_ends_without_publishing_it(
    tiny_model, sixteen, tmp_path, capsys
):
    args = common(sixteen, tmp_path / "out", 6, lr=1e30)
    args[args.index("--save-steps") + 1] = "1"
    error = refused(["--stage", "finetune", "--model", str(tiny_model), *args], capsys)
    assert "training diverged at step" in error and "lower --lr" in error

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))

    for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines():
        strict(line)
    published = tmp_path / "out" / "model.safetensors"
    if published.exists():
        assert all(math.isfinite(float(w.abs().max())) for w in load_file(published).values())


def test_a_file_whose_questions_are_all_held_out_says_so(tiny_model, sixteen, tmp_path, capsys):
    """A file of one paragraph: the split, by paragraph there, holds all of it out."""
    document = json.loads(sixteen.read_text())
    document["data"] = [document["data"][0] | {"paragraphs": document["data"][0]["paragraphs"][:1]}]
    questions = len(document["data"][0]["paragraphs"][0]["qas"])
    one = tmp_path / "one-paragraph.json"
    one.write_text(json.dumps(document))
    args = common(one, tmp_path / "out", 2)
    del args[args.index("--heldout") : args.index("--heldout") + 2]
    error = refused(["--stage", "finetune", "--model", str(tiny_model), *args], capsys)
    assert (
        f"no training questions left: of {questions} questions, {questions} are held out and 0 have" in error
    )
    assert "--heldout FILE" in error


def test_a_run_on_two_processes_that_cannot_start_says_why_in_one_line(tmp_path):
    """Both processes find the error; the first says it, and torchrun's traceback is left out."""
    nowhere = tmp_path / "nowhere"
    command = [sys.executable, "-m", "dynamic_tinybert", "train", "--processes", "2", "--stage", "finetune"]
    command += ["--model", str(nowhere), "--data", str(tmp_path / "x.json"), "--output", str(tmp_path / "o")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    said = f"dynamic-tinybert train: error: model folder {nowhere} does not exist"
    assert (done.returncode, done.stderr.splitlines()) == (2, [said])


def test_ctrl_c_of_a_run_on_two_processes_saves_its_step_and_ends_in_one_line(tiny_model, sixteen, tmp_path):
    """Both processes finish the step they are in and save it together; the first says so."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dynamic_tinybert", "train", "--processes", "2", "--stage", "finetune"]
    command += ["--model", str(tiny_model), *common(sixteen, out, 100_000), "--batch-size", "4", "--quiet"]
    process = subprocess.Popen(
        [*command, "--log-steps", "1"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job ignores it
    )
    deadline = time.monotonic() + 120
    while '"loss"' not in _read(out / "metrics.jsonl") and time.monotonic() < deadline:  # in its steps
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # to torchrun's agent alone: it passes it on
    _, err = process.communicate(timeout=120)
    [state] = (out / "trainer").glob("step-*")
    step = int(state.name[5:])
    said = f"interrupted after step {step}, its state saved in {out / 'trainer'}"
    assert (process.returncode, err.splitlines()) == (
        130,
        [NOTICE, f"{said}: the same command resumes from there"],
    )


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_processes_from_python_are_refused_with_how_to_start_them():
    settings = TrainSettings(stage="finetune", model="m", data=["d"], output="o", processes=2)
    with pytest.raises(TrainingError, match="started by `dynamic-tinybert train --processes`, or torchrun"):
        train(settings)
