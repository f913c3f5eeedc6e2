"""Bad input to the scripts (scripts/frontier_report.py, results_table.py, heldout_split.py,
accelerator.py, export_model.py, first_scorer_probe.py, heldout_sample_f1.py, loadtest.py,
margin_sweep.py, reference_predictions.py, selector_report.py, squad_dev_fingerprint.py) ends in
one line on stderr naming what is wrong and exit status 2, before any long work; never a traceback,
never a silently different run, never an input overwritten."""

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
        (["--budgets", "2"], "--budgets: budget 2.0 is outside (0, 1]"),
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
        ("export_model", ["--model", "{root}/no-model", "--out", "{root}/out"], "no-model does not exist"),
        ("reference_predictions", ["--compare", "{dev}", "{dev}"], "is not a predictions file"),
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


def assert_usage(script: str, capsys, args: list[str], words: str) -> None:
    """argparse's refusal: exit status 2, the usage and one error line that holds `words`."""
    with pytest.raises(SystemExit) as stop:
        load_script(script).main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "error: " in lines[-1] and words in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def packed(folders) -> Path:
    """The tiny model packed by scripts/accelerator.py: the prefix of its parts."""
    prefix = folders["root"] / "parts" / "model"
    assert load_script("accelerator").main(["pack", str(folders["plain"]), str(prefix)]) == 0
    return prefix


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["pack", "{plain}", "{root}"],
            "is a folder; the parts are named after the prefix",
        ),  # wrote /tmp/x.000
        (["pack", "{plain}", "{root}/a-file/parts"], "a-file is a file, not a folder"),
        (["unpack", "{root}/bad-manifest/m", "{root}/back"], "m.json is not valid JSON"),
        (["unpack", "{root}/odd-manifest/m", "{root}/back"], "is not a manifest that `pack` wrote"),
        (["unpack", "{root}/parts/model", "{root}/a-file"], "a-file is a file; give the folder"),
        (
            ["calls", "{root}/calls", "{plain}", "--reserve-mb", "0"],
            "plain is not a file: `calls` moves files",
        ),
        (["calls", "{root}/calls", "{root}/a-file", "--repo", "{root}"], "is not a git checkout"),
        (["calls", "{root}/calls", "{root}/a-file", "--reserve-mb", "64"], "fills a call of 64 MiB"),
        (
            ["calls", "{root}/a-file", "{root}/a-file", "--reserve-mb", "0"],
            "a-file is a file; give the folder",
        ),
    ],
)
def test_accelerator_refuses_bad_paths_in_one_line(folders, packed, squad_file, capsys, args, words):
    for name, text in (("bad-manifest", "{not json"), ("odd-manifest", '{"parts": 3}')):
        (folders["root"] / name).mkdir(exist_ok=True)
        (folders["root"] / name / "m.json").write_text(text)
    assert_refused(*run_script("accelerator", capsys, fill(args, folders, squad_file))[::2], words)
    assert folders["plain"].is_dir() and (folders["root"] / "a-file").is_file()  # nothing moved


@pytest.mark.parametrize(
    "args, words",
    [
        (["pack", "{plain}", "{root}/p", "--part-mb", "0"], "--part-mb must be above 0"),  # a traceback
        (["pack", "{plain}", "{root}/p", "--part-mb", "-1"], "--part-mb must be above 0"),  # no parts, exit 0
        (["calls", "{root}/calls", "{root}/a-file", "--limit-mb", "0"], "--limit-mb must be above 0"),
        (["calls", "{root}/calls", "{root}/a-file", "--reserve-mb", "-5"], "--reserve-mb must be 0 or more"),
    ],
)
def test_accelerator_refuses_sizes_that_leave_no_room(folders, squad_file, capsys, args, words):
    assert_usage("accelerator", capsys, fill(args, folders, squad_file), words)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "{root}/no-model", "--out", "{root}/out"], "no-model does not exist"),
        (["--model", "{corrupt}", "--out", "{root}/out"], "frontier.json is not a valid frontier file"),
        (["--model", "{plain}", "--out", "{root}/a-file"], "a-file is a file; give a folder"),
        (["--model", "{plain}", "--out", "{root}/a-file/model"], "a-file is a file, not a folder"),
        (["--model", "{plain}", "--out", "{plain}"], "is the --model folder, whose weights the export would"),
    ],
)
def test_export_model_refuses_what_it_cannot_ship(folders, squad_file, capsys, args, words):
    before = sorted(p.name for p in folders["plain"].iterdir())
    assert_refused(*run_script("export_model", capsys, fill(args, folders, squad_file))[::2], words)
    assert (
        sorted(p.name for p in folders["plain"].iterdir()) == before
        and not (folders["root"] / "out").exists()
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["{model}", "--heldout", "{root}/none.json"], "none.json does not exist"),
        (["{root}/no-model", "--heldout", "{dev}"], "no-model does not exist"),
        (
            ["{model}", "--heldout", "{dev}", "--heldout-limit", "0"],
            "--heldout-limit must be at least 1, got 0",
        ),
        (["{model}", "--heldout", "{dev}", "--seed", "-1"], "--seed must be from 0"),  # a numpy traceback
        (["{model}", "--heldout", "{dev}", "--length-ratio", "0"], "--length-ratio must be above 0"),
        (
            ["{model}", "--heldout", "{dev}", "--stage", "selector", "--selector-share", "2"],
            "--selector-share",
        ),
    ],
)
def test_heldout_sample_f1_refuses_bad_input(folders, squad_file, capsys, args, words):
    assert_refused(*run_script("heldout_sample_f1", capsys, fill(args, folders, squad_file))[::2], words)


def test_heldout_sample_f1_refuses_a_setting_its_stage_ignores(folders, squad_file, capsys):
    args = fill(["{model}", "--heldout", "{dev}", "--selector-share", "0.3"], folders, squad_file)
    assert_usage("heldout_sample_f1", capsys, args, "--selector-share is a setting of --stage selector")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "0"], "--epochs must be above 0, got 0"),  # ran nothing, exit 0
        (["--lr", "-1"], "--lr must be above 0"),  # a torch traceback
        (["--width", "0"], "--selector-width must be at least 1, got 0"),
        (["--dropout", "1.5"], "--selector-dropout must be from 0 to below 1"),
        (["--heldout-limit", "-4"], "--heldout-limit must be at least 1"),
        (["--seed", "-1"], "--seed must be from 0"),
        (["--cache", "{root}"], "is a folder; give a file name"),
        (["--cache", "{root}/a-file/c.pt"], "a-file is a file, not a folder"),
        (["--cache", "{root}/a-file"], "is not a cache of this script"),
        (["--data", "{root}/none.json"], "none.json does not exist"),
    ],
)
def test_first_scorer_probe_refuses_bad_input(folders, squad_file, capsys, args, words):
    argv = [
        "--model",
        str(folders["model"]),
        "--data",
        str(squad_file),
        "--cache",
        str(folders["root"] / "c.pt"),
    ]
    assert_refused(
        *run_script("first_scorer_probe", capsys, argv + fill(args, folders, squad_file))[::2], words
    )


def test_first_scorer_probe_refuses_a_negative_window_count(folders, squad_file, capsys):
    args = ["--model", str(folders["model"]), "--data", str(squad_file), "--windows", "-1"]
    assert_refused(
        *run_script("first_scorer_probe", capsys, args)[::2], "--windows must be at least 0, got -1"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--budgets", "x"], "--budgets 'x' is not a comma-separated list of numbers"),  # a traceback
        (["--budgets", "2"], "--budgets: budget 2.0 is outside (0, 1]"),
        (["--margins", "x"], "--margins 'x' is not a comma-separated list"),  # after the full evaluation
        (["--margins", "1,2"], "got 2 margins but the model has 4 layers"),
        (["--json", "{root}"], "--json {root} is a folder"),  # after all the evaluations
        (["--json", "{dev}"], "is the --data file"),  # overwrote the questions
        (["--model", "{plain}"], "has no learned selector"),
        (["--model", "{corrupt}"], "frontier.json is not a valid frontier file"),
        (["--data", "{root}/none.json"], "none.json does not exist"),
    ],
)
def test_margin_sweep_refuses_bad_input(folders, squad_file, capsys, args, words):
    argv = ["--model", str(folders["model"]), "--data", str(squad_file), "--dtype", "fp32", "--margins", "1"]
    code, _, err = run_script("margin_sweep", capsys, argv + fill(args, folders, squad_file))
    assert_refused(code, err, words.format(**folders))
    assert json.loads(squad_file.read_text())["version"] == "1.1"


def test_margin_sweep_leaves_out_a_budget_below_the_frontier(folders, squad_file, capsys, tmp_path):
    """The default budgets start at 0.25, below the tiny frontier's cheapest point: a traceback
    after the full evaluation; now that budget is left out with a note, and --json's folder made."""
    out = tmp_path / "new" / "sweep.json"
    argv = ["--model", str(folders["model"]), "--data", str(squad_file), "--dtype", "fp32"]
    code, _, err = run_script(
        "margin_sweep", capsys, [*argv, "--budgets", "0.25,1", "--margins", "1", "--json", str(out)]
    )
    assert code == 0 and "budget 0.25 left out: budget 0.25 is beyond the cheapest frontier point" in err
    assert [r["kind"] for r in json.loads(out.read_text())] == ["lengths", "margins"]
    assert_refused(
        *run_script("margin_sweep", capsys, [*argv, "--limit", "0"])[::2], "--limit must be at least 1"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--budgets", "x"], "--budgets 'x' is not a comma-separated list"),
        (["--plot", "{root}"], "--plot {root} is a folder"),  # wrote {root}.png beside it, exit 0
        (["--plot", "{root}/report.txt"], "give a file name ending in .png"),  # after the evaluations
        (["--json", "{dev}"], "is the --data file"),
        (["--attention-frontier", "{root}/none.json"], "none.json: cannot read the frontier file"),
        (["--attention-frontier", "{root}/a-file"], "a-file is not a valid frontier file"),
        (["--model", "{plain}"], "the model needs a learned selector and a frontier searched with it"),
    ],
)
def test_selector_report_refuses_bad_input(folders, squad_file, capsys, args, words):
    argv = [
        "--model",
        str(folders["model"]),
        "--data",
        str(squad_file),
        "--dtype",
        "fp32",
        "--budgets",
        "0.5",
    ]
    code, _, err = run_script("selector_report", capsys, argv + fill(args, folders, squad_file))
    assert_refused(code, err, words.format(**folders))
    assert not Path(f"{folders['root']}.png").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "give --model, --data, --out (or --compare REFERENCE OURS)"),  # a TypeError traceback
        (
            ["--compare", "{dev}", "{dev}", "--model", "{plain}"],
            "leave out --model, --data, --out and --limit",
        ),
    ],
)
def test_reference_predictions_refuses_options_that_do_not_go_together(
    folders, squad_file, capsys, args, words
):
    assert_usage("reference_predictions", capsys, fill(args, folders, squad_file), words)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--model", "{plain}", "--data", "{root}/none.json", "--out", "{root}/r.json"], "cannot read it"),
        (["--model", "{plain}", "--data", "{root}/a-file", "--out", "{root}/r.json"], "is not valid JSON"),
        (["--model", "{plain}", "--data", "{dev}", "--out", "{root}"], "is a folder; give a file name"),
        (["--model", "{plain}", "--data", "{dev}", "--out", "{dev}"], "is the --data file"),
        (
            ["--model", "{root}/no-model", "--data", "{dev}", "--out", "{root}/r.json"],
            "transformers cannot load it",
        ),
        (
            ["--model", "{plain}", "--data", "{dev}", "--out", "{root}/r.json", "--limit", "0"],
            "--limit must be",
        ),
        (
            ["--model", "{plain}", "--data", "{dev}", "--out", "{root}/r.json", "--batch-size", "0"],
            "--batch-size",
        ),
        (["--compare", "{dev}", "{dev}"], "is not a predictions file"),  # 'agree on 0 of 2', exit 1
        (
            ["--compare", "{root}/empty.json", "{root}/empty.json"],
            "holds no predictions",
        ),  # ZeroDivisionError
    ],
)
def test_reference_predictions_refuses_bad_files(folders, squad_file, capsys, args, words):
    (folders["root"] / "empty.json").write_text("{}")
    assert_refused(*run_script("reference_predictions", capsys, fill(args, folders, squad_file))[::2], words)
    assert json.loads(squad_file.read_text())["version"] == "1.1"


def test_reference_predictions_compare_still_ends_in_its_verdict(tmp_path, capsys):
    ours, other = tmp_path / "ours.json", tmp_path / "other.json"
    ours.write_text(json.dumps({"q1": "nine"}))
    other.write_text(json.dumps({"q1": "ten"}))
    assert run_script("reference_predictions", capsys, ["--compare", str(ours), str(ours)])[0] == 0
    assert run_script("reference_predictions", capsys, ["--compare", str(ours), str(other)])[0] == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["--dev", "{dev}"], "holds 2 questions, not SQuAD 1.1 dev's 10,570"),  # replaced the package's
        (["--dev", "{root}/none.json"], "none.json does not exist"),
        (["--dev", "{dev}", "--out", "{root}"], "--out {root} is a folder"),
        (["--dev", "{dev}", "--out", "{dev}"], "is the --dev file"),
        (["--dev", "{dev}", "--contexts-out", "{root}/ids.bin"], "both {root}/ids.bin"),
    ],
)
def test_squad_dev_fingerprint_refuses_what_is_not_squad_dev(folders, squad_file, capsys, args, words):
    argv = [
        "--out",
        str(folders["root"] / "ids.bin"),
        "--contexts-out",
        str(folders["root"] / "contexts.bin"),
    ]
    code, _, err = run_script("squad_dev_fingerprint", capsys, argv + fill(args, folders, squad_file))
    assert_refused(code, err, words.format(**folders))
    assert (
        not (folders["root"] / "ids.bin").exists() and json.loads(squad_file.read_text())["version"] == "1.1"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["--url", "http://127.0.0.1:1", "--latency-slo", "300"],
            "--latency-slo: the settings of the servers",
        ),
        (["--model", "{model}", "--slo-url", "http://127.0.0.1:1"], "--slo-url is the SLO server of --url"),
        (["--model", "{model}", "--max-batch", "0"], "--max-batch must be at least 1, got 0"),  # passed over
        (["--model", "{model}", "--latency-slo", "-5"], "--latency-slo must be positive milliseconds"),
    ],
)
def test_loadtest_refuses_options_before_any_server_starts(folders, squad_file, capsys, args, words):
    assert_usage("loadtest", capsys, fill(args, folders, squad_file), words)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--budgets", "x"], "--budgets 'x' is not a comma-separated list of numbers"),  # a traceback
        (["--questions", "0"], "--questions must be at least 1, got 0"),  # a ZeroDivisionError in the clients
        (["--heavy", "0"], "--heavy must be at least 1, got 0"),  # ran the load rows instead
    ],
)
def test_loadtest_refuses_bad_numbers_before_it_waits_for_a_server(capsys, args, words):
    code, _, err = run_script("loadtest", capsys, ["--url", "http://127.0.0.1:1", *args])
    assert_refused(code, err, words)
