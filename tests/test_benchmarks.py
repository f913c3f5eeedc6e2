"""The benchmarks run end to end on a tiny model (their numbers are not checked, their sense is)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DEV, SHARED_DATA

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
TRAIN = SHARED_DATA / "train" / "squadshifts_amazon.json"
pytestmark = pytest.mark.skipif(not DEV.is_file(), reason=f"SQuAD dev not found at {DEV}")


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_speed_gives_each_row_its_f1_and_transformers_answers_as_we_do(tiny_model, tmp_path):
    out = tmp_path / "speed.json"
    common = ["--questions", "6", "--f1-questions", "12", "--latency-windows", "2", "--repeats", "1"]
    table = run("speed.py", "--model", str(tiny_model), "--data", str(DEV), *common, "--out", str(out))
    rows = {r["system"]: r for r in json.loads(out.read_text())["rows"]}
    assert "| F1 |" in table and len(rows) == 6
    # the same weights at full length in fp32: the same answers, so the same F1
    full, theirs = rows["dynamic-tinybert full"], rows["transformers, dynamic padding"]
    assert full["f1"] == theirs["f1"] == rows["transformers, padded to 384"]["f1"]
    assert all(r["latency_ms_batch1"] > 0 and r["windows_per_s_batch32"] > 0 for r in rows.values())


def test_profile_splits_eval_into_phases_and_the_network_into_kinds(tiny_model):
    table = run(
        "profile_eval.py",
        "--model",
        str(tiny_model),
        "--data",
        str(DEV),
        "--questions",
        "8",
        "--repeats",
        "1",
    )
    for phase in ("tokenizing and windowing", "the network", "answer ranking", "linear maps", "layer norm"):
        assert f"| {phase}" in table


def test_train_step_times_each_dropout_setting(tiny_model):
    table = run(
        "train_step.py",
        "--model",
        str(tiny_model),
        "--train-file",
        str(TRAIN),
        "--train-questions",
        "16",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeats",
        "1",
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "seconds" not in line]
    assert len(rows) == 3 and rows[0].endswith("| 1.00x |")


def test_precision_runs_each_precision_at_full_length_and_under_a_margin(tiny_selector_model):
    table = run(
        "precision.py",
        *("--model", str(tiny_selector_model), "--data", str(DEV), "--questions", "6", "--repeats", "1"),
        *("--dtypes", "fp32,int8", "--margins", "2", "--no-onnx"),
    )
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines() if line.startswith("| dynamic")]
    assert rows == [
        "dynamic-tinybert fp32, full length",
        "dynamic-tinybert fp32, --margins 2",
        "dynamic-tinybert int8, full length",
        "dynamic-tinybert int8, --margins 2",
    ]


def test_forward_ab_times_each_tree_alternately_and_refuses_a_tree_without_the_package(
    tiny_selector_model, tmp_path
):
    root = str(Path(__file__).parents[1])
    common = ["--model", str(tiny_selector_model), "--data", str(DEV), "--questions", "4", "--repeats", "1"]
    common += ["--latency-windows", "2", "--margins", "2"]
    table = run("forward_ab.py", root, *common, "--pairs", "2")
    runs = [line for line in table.splitlines() if line.startswith("pair ")]
    assert [line.split(":")[0] for line in runs] == [f"pair {p} {root}" for p in (1, 2)]
    [median] = [line for line in table.splitlines() if line.startswith(f"median of 2 {root}: ")]
    speedups = [float(part.split()[-1]) for part in median.split(": ")[1].split(", ")]
    assert len(speedups) == 4 and all(s > 0 for s in speedups)
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "forward_ab.py"), str(tmp_path), *common, "--pairs", "1"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "holds no dynamic_tinybert package" in done.stderr
    bad = [sys.executable, str(BENCHMARKS / "forward_ab.py"), root, "--margins", "wide"]
    done = subprocess.run(bad, capture_output=True, text=True)
    assert done.returncode == 2 and "give numbers such as 3" in done.stderr and "Traceback" not in done.stderr
