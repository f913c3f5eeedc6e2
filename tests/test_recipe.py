"""The recipe script's smoke run: every stage, then the search, end to end on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dynamic_tinybert import QuestionAnswerer
from dynamic_tinybert.frontier import Frontier

from .conftest import SHARED_DATA, make_checkpoint

DATA = SHARED_DATA / "train" / "tydiqa_goldp_en_train.json"


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
    for stage in ("finetune", "intermediate", "prediction", "selector", "lengthdrop"):
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
    # the same command again finds every stage finished and changes nothing
    subprocess.run(command, check=True, timeout=900)
