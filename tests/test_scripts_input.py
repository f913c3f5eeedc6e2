"""Bad input to the report scripts (scripts/frontier_report.py, scripts/results_table.py) ends in
one line on stderr naming what is wrong and exit status 2, before any long work; never a traceback,
never a silently different run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import load_script, make_checkpoint
from .test_margins import with_small_frontier

SCRIPTS = Path(__file__).parents[1] / "scripts"


@pytest.fixture(scope="module")
def folders(tiny_selector_model, tmp_path_factory) -> dict[str, Path]:
    """A model with a frontier, the same with a corrupt frontier.json, a model without a learned
    selector, a teacher with a corrupt config.json, a file and a path that does not exist."""
    root = tmp_path_factory.mktemp("scripts-input")
    model = root / "model"
    shutil.copytree(tiny_selector_model, model)
    with_small_frontier(model)
    corrupt = shutil.copytree(model, root / "corrupt-frontier")
    (corrupt / "frontier.json").write_text("{not json")
    plain = make_checkpoint(root / "plain")
    teacher = shutil.copytree(plain, root / "corrupt-teacher")
    (teacher / "config.json").write_text("{oops")
    (root / "a-file").write_text("")
    return {"model": model, "corrupt": corrupt, "plain": plain, "teacher": teacher, "root": root}


def run_script(name: str, capsys, args: list[str]) -> tuple[int, str, str]:
    code = load_script(name).main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, err: str, words: str) -> None:
    """Exit status 2 and one line on stderr that holds `words`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert "error:" in lines[0] and words in lines[0], lines[0]


def fill(args: list[str], folders: dict[str, Path], squad_file: Path) -> list[str]:
    return [a.format(**folders, dev=squad_file) for a in args]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--budgets", "x"], "--budgets 'x' is not a comma-separated list of numbers"),
        (["--budgets", "1,0.5,"], "is not a comma-separated list"),
        (["--budgets", "2"], "--budgets: 2 is outside (0, 1]"),
        (["--dev", "{root}/no-dev.json"], "no-dev.json does not exist"),
        (["--dev", "{dev}", "--dev-limit", "0"], "--dev-limit must be at least 1, got 0"),
        (["--dev", "{dev}", "--dev-limit", "-2"], "--dev-limit must be at least 1, got -2"),
        (["--dev-limit", "3"], "give --dev too"),
        (["--plot", "{root}/frontier.txt"], "give a file name ending in .png"),
        (["--plot", "{root}"], "is a folder; give a file name"),
        (["--plot", "{root}/a-file/frontier.png"], "cannot make the folder"),
    ],
)
def test_frontier_report_refuses_bad_options(folders, squad_file, capsys, args, words):
    argv = ["--model", str(folders["model"]), *fill(args, folders, squad_file)]
    assert_refused(*run_script("frontier_report", capsys, argv)[::2], words)


@pytest.mark.parametrize(
    "model, words",
    [
        ("{root}/no-model", "no-model does not exist"),
        ("{corrupt}", "frontier.json is not a valid frontier file"),
        ("{plain}", "has no frontier.json; run dynamic-tinybert search first"),
    ],
)
def test_frontier_report_refuses_a_model_it_cannot_report_on(folders, squad_file, capsys, model, words):
    argv = ["--model", model.format(**folders)]
    assert_refused(*run_script("frontier_report", capsys, argv)[::2], words)


def test_frontier_report_writes_the_plot_whole_or_not_at_all(folders, capsys, tmp_path, monkeypatch):
    figures = pytest.importorskip("matplotlib.figure")

    target = tmp_path / "pictures" / "frontier.png"  # its folder is made
    code, out, _ = run_script(
        "frontier_report", capsys, ["--model", str(folders["model"]), "--plot", str(target)]
    )
    assert code == 0 and f"plot: {target}" in out
    assert target.read_bytes().startswith(b"\x89PNG") and [p.name for p in target.parent.iterdir()] == [
        "frontier.png"
    ]
    before = target.read_bytes()

    def half_written(figure, out, **kwargs):  # a folder the machine refuses, after a first byte
        Path(out).write_bytes(b"\x89")
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(figures.Figure, "savefig", half_written)
    code, _, err = run_script(
        "frontier_report", capsys, ["--model", str(folders["model"]), "--plot", str(target)]
    )
    assert_refused(code, err, f"--plot {target}: cannot write it: Permission denied")
    assert target.read_bytes() == before and [p.name for p in target.parent.iterdir()] == ["frontier.png"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--dev", "{root}/no-dev.json"], "no-dev.json does not exist"),
        (["--student", "{root}/no-model"], "no-model does not exist"),
        (["--student", "{corrupt}"], "frontier.json is not a valid frontier file"),
        (["--latency-windows", "0"], "--latency-windows must be at least 1, got 0"),
        (["--speed-questions", "0"], "--speed-questions must be at least 1, got 0"),
        (["--speed-questions", "-3"], "--speed-questions must be at least 1, got -3"),
        (["--dev-limit", "0"], "--dev-limit must be at least 1, got 0"),
        (["--dev-limit", "-2"], "--dev-limit must be at least 1, got -2"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
        (["--margins", "x"], "--margins 'x' is not a comma-separated list of numbers"),
        (["--margins", "-1"], "margin -1.0 of layer 1 is not a number >= 0"),
        (["--margins", "1,2"], "got 2 margins but the model has 4 layers"),
        (["--student", "{plain}", "--margins", "2"], "this model has none (no selector.safetensors)"),
        (["--teacher", "{teacher}"], "config.json is not valid JSON"),
        (["--teacher-speed", "{root}/no-teacher"], "no-teacher does not exist"),
        (["--teacher", "{plain}", "--margins", "x"], "--margins 'x'"),  # before the teacher's evaluation
    ],
)
def test_results_table_refuses_bad_options(folders, squad_file, capsys, args, words):
    argv = ["--student", str(folders["model"]), "--dev", str(squad_file), "--dtype", "fp32"]
    argv += ["--speed-questions", "2", "--latency-windows", "1", "--repeats", "1"]
    code, _, err = run_script("results_table", capsys, argv + fill(args, folders, squad_file))
    assert_refused(code, err, words)


@pytest.mark.parametrize(
    "script, args, words",
    [
        ("frontier_report", ["--model", "{model}", "--budgets", "x"], "--budgets 'x'"),
        ("results_table", ["--student", "{model}", "--dev", "{dev}", "--margins", "1,2"], "got 2 margins"),
    ],
)
def test_the_scripts_run_as_commands_say_what_is_wrong_in_one_line(folders, squad_file, script, args, words):
    command = [sys.executable, str(SCRIPTS / f"{script}.py"), *fill(args, folders, squad_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"{script}.py: error: ") and words in done.stderr


def test_heldout_split_makes_its_folder_and_refuses_what_it_cannot_split(squad_file, tmp_path, capsys):
    out = tmp_path / "not" / "made" / "heldout.json"
    assert load_script("heldout_split").main([str(out), str(squad_file)]) == 0
    assert json.loads(out.read_text())["version"] == "1.1"
    code, _, err = run_script("heldout_split", capsys, [str(out), str(tmp_path / "none.json")])
    assert_refused(code, err, "none.json does not exist")
    with pytest.raises(SystemExit) as stop:
        load_script("heldout_split").main([str(out), "--skip", "-3", str(squad_file)])
    assert stop.value.code == 2 and "--skip must be 0 or more (got -3)" in capsys.readouterr().err
