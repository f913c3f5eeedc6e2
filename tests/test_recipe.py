"""The recipe script's smoke run: every stage, then the search, end to end on tiny models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamic_tinybert import QuestionAnswerer
from dynamic_tinybert.frontier import Frontier

from .conftest import DEV, SHARED_DATA, load_script, make_checkpoint

DATA = SHARED_DATA / "train" / "tydiqa_goldp_en_train.json"
SCRIPT = Path(__file__).parents[1] / "scripts" / "recipe.py"
STAGE_NAMES = ["finetune", "intermediate", "prediction", "selector", "lengthdrop"]


@pytest.mark.skipif(not DATA.is_file(), reason=f"training data not found at {DATA}")
def test_recipe_smoke_run_goes_through_every_stage(tmp_path):
    teacher = make_checkpoint(tmp_path / "teacher-start", seed=1)
    student = make_checkpoint(
        tmp_path / "student-start",
        seed=2,
        hidden_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=64,
    )
    out = tmp_path / "recipe"
    script = Path(__file__).parents[1] / "scripts" / "recipe.py"
    command = [
        sys.executable,
        str(script),
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--data",
        str(DATA),
        "--out",
        str(out),
        "--smoke",
    ]
    subprocess.run(command, check=True, timeout=900)
    for stage in STAGE_NAMES:
        assert json.loads((out / stage / "trainer" / "step-00000003" / "progress.json").read_text())[
            "finished"
        ]
    summary = json.loads((out / "recipe.json").read_text())
    assert Path(summary["chosen"]).name in ("selector", "lengthdrop")
    final = QuestionAnswerer.from_pretrained(out / "final")
    assert final.model.config.hidden_size == 32 and isinstance(final.frontier, Frontier)
    # the student ships with its learned selector, and its frontier was searched with it
    assert final.model.selector is not None and final.frontier.selector == "learned"
    assert not (out / "final" / "trainer").exists()
    # the same command again finds every stage and search finished: no file changes (the search
    # and the final folder are written again, with the same bytes)
    before = files_in(out)
    subprocess.run(command, check=True, timeout=900)
    assert files_in(out) == before


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under folder, and its bytes."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


# --- bad input and interruptions: one line, the stage's exit status, never a traceback ------------


def recipe_command(tmp_path: Path, *args: str) -> list[str]:
    teacher = make_checkpoint(tmp_path / "teacher-start", seed=1)
    return [sys.executable, str(SCRIPT), "--teacher", str(teacher), "--student", str(teacher), *args]


@pytest.mark.skipif(not DATA.is_file(), reason=f"training data not found at {DATA}")
@pytest.mark.parametrize(
    "args, said",
    [
        (["--data", str(DATA), "--lr", "finetune=-1"], "--lr must be above 0"),
        (["--data", str(DEV)], "SQuAD 1.1 dev"),  # the test set is never trained on
        # on two processes: the first says it for both, and torchrun's traceback is left out
        (["--data", str(DEV), "--processes", "2"], "SQuAD 1.1 dev"),
    ],
)
def test_a_failing_stage_ends_in_a_line_naming_it_and_exits_with_its_status(tmp_path, args, said):
    if not DEV.is_file():
        pytest.skip(f"SQuAD dev not found at {DEV}")
    command = recipe_command(tmp_path, *args, "--out", str(tmp_path / "recipe"), "--smoke")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    *_, stage_says, recipe_says = done.stderr.strip().splitlines()
    assert stage_says.startswith("dynamic-tinybert train: error: ") and said in stage_says
    assert recipe_says.startswith("recipe.py: error: stage finetune failed (exit status 2)")


@pytest.mark.parametrize(
    "args, said",
    [
        (["--processes", "0"], "--processes must be at least 1, got 0"),
        (["--out", "{file}"], "is a file; give a folder"),
    ],
)
def test_bad_options_are_refused_before_any_stage_runs(tmp_path, args, said):
    (tmp_path / "a-file").write_text("")
    args = [a.format(file=tmp_path / "a-file") for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "recipe")]
    done = subprocess.run(
        recipe_command(tmp_path, "--data", str(DATA), "--smoke", *out, *args),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.startswith("recipe.py: error: "), done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and said in done.stderr


@pytest.mark.skipif(not DATA.is_file(), reason=f"training data not found at {DATA}")
def test_ctrl_c_stops_the_stage_and_the_recipe_in_one_line_each(tmp_path):
    command = recipe_command(tmp_path, "--data", str(DATA), "--out", str(tmp_path / "recipe"))
    # a process group of its own, signalled whole, as a terminal's Ctrl-C is
    recipe = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert recipe.stderr.readline().startswith("+ ")  # the first stage has started
        os.killpg(recipe.pid, signal.SIGINT)
        err = recipe.stderr.read()
        recipe.wait(timeout=60)
    finally:
        recipe.kill()
    assert recipe.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "recipe.py: interrupted; the same command goes on where it stopped"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the stage's process in /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_recipe_stopped_alone_stops_its_stage_too(tmp_path, sig):
    """As a service manager stops it (SIGTERM to the recipe alone), or SIGKILL, which the recipe
    cannot catch: its running stage ends with it (before, SIGKILL left the stage running on)."""
    command = recipe_command(tmp_path, "--data", str(DATA), "--out", str(tmp_path / "recipe"))
    recipe, stages = subprocess.Popen(command, stderr=subprocess.PIPE, text=True), []
    try:
        assert recipe.stderr.readline().startswith("+ ")  # the first stage has started
        children = Path(f"/proc/{recipe.pid}/task/{recipe.pid}/children")
        deadline = time.monotonic() + 30
        while not (stages := children.read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the stage imports torch for seconds; the recipe is back in its wait by now
        recipe.send_signal(sig)
        recipe.wait(timeout=60)
        deadline = time.monotonic() + 30
        while (running := [pid for pid in stages if _running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stages and not running  # no orphan left
        err = recipe.stderr.read()  # (the end of the pipe comes once the stage, which shares it, is gone)
    finally:
        recipe.kill()
        for pid in (p for p in stages if _running(p)):
            os.kill(int(pid), signal.SIGKILL)
    if sig == signal.SIGKILL:
        assert recipe.returncode == -signal.SIGKILL
        return
    assert recipe.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "recipe.py: terminated; the same command goes on where it stopped"


def _running(pid: str) -> bool:
    """Whether the process runs: it exists and is not a zombie (an orphan's is reaped by whoever
    adopts it, if they reap at all)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Killed(BaseException):
    """The process ending at this point, as a kill would end it."""


def test_final_is_written_whole_or_not_at_all(tmp_path, monkeypatch, capsys):
    """A run stopped while it copies the chosen model leaves the final model of before; a run
    that finishes replaces it whole (nothing of the old one, nothing of the training state)."""
    recipe = load_script("recipe")

    def stage(command, *_):  # each stage's folder, as train and search leave it
        if "--output" in command:
            output = Path(command[command.index("--output") + 1])
            (output / "trainer").mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                (output / name).write_text(output.name)

    monkeypatch.setattr(recipe, "run", stage)
    monkeypatch.setattr(recipe, "score", lambda folder: 2.0 if folder.name == "lengthdrop" else 1.0)
    out = tmp_path / "recipe"
    (out / "final").mkdir(parents=True)
    (out / "final" / "old.txt").write_text("the final model of before")
    copytree = shutil.copytree

    def stopped_while_copying(source, target, **options):
        Path(target).mkdir(exist_ok=True)
        shutil.copy2(Path(source) / "config.json", target)
        raise Killed

    argv = ["recipe.py", "--teacher", "t", "--student", "s", "--data", "d.json", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(shutil, "copytree", stopped_while_copying)
    with pytest.raises(Killed):
        recipe.main()
    assert sorted(p.name for p in out.iterdir()) == sorted(["final", *STAGE_NAMES])  # no staging left
    assert [p.name for p in (out / "final").iterdir()] == ["old.txt"]
    monkeypatch.setattr(shutil, "copytree", copytree)
    assert recipe.main() == 0
    assert sorted(p.name for p in (out / "final").iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "final" / "config.json").read_text() == "lengthdrop"
    assert json.loads((out / "recipe.json").read_text())["chosen"] == str(out / "lengthdrop")
