"""The model shipped in the package: small, loaded when no --model is given, and it answers the
model card's quick-start question, through `dynamic-tinybert ask` and in plain transformers."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

from dynamic_tinybert import QuestionAnswerer
from dynamic_tinybert.checkpoint import DEFAULT_MODEL
from dynamic_tinybert.cli import main
from dynamic_tinybert.frontier import BudgetError

from .conftest import run_model_card_quick_start

QUESTION = "What is the number I told you?"
CONTEXT = "remember the number 123456, I'll ask you later."


def test_the_shipped_folder_is_small_fp16_and_has_a_frontier():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.iterdir())
    assert size < 50 * 2**20
    with safe_open(DEFAULT_MODEL / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}
    frontier = QuestionAnswerer.from_pretrained().frontier
    assert frontier is not None and frontier.points[-1].is_full
    assert frontier.pick(budget=0.5).flops_ratio <= 0.5
    with pytest.raises(BudgetError, match="budget must be a number, got '0.5'"):
        frontier.pick(budget="0.5")


def test_ask_without_a_model_answers_the_model_card_question(capsys):
    code = main(["ask", "--question", QUESTION, "--context", CONTEXT, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["model"] == str(DEFAULT_MODEL)
    assert report["answers"][0]["answer"] == "123456"


def test_plain_transformers_answers_the_model_card_question_on_the_shipped_folder():
    assert run_model_card_quick_start(DEFAULT_MODEL).strip() == "Answer: 123456"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f["points"][0].update(heldout_f1="x"), "heldout_f1 must be a number, got 'x'"),
        (
            lambda f: f["margin_points"][0].update(latency_ms_batch1=[]),
            "latency_ms_batch1 must be a number or null",
        ),
        (  # a measurement in another precision with its throughput missing
            lambda f: f["points"][-1].update(
                by_dtype={"bf16": {"heldout_exact_match": 60.0, "heldout_f1": 70.0, "latency_ms_batch1": 9.0}}
            ),
            "throughput_batch32",
        ),
        (lambda f: f["points"][1].update(lengths=["1", 1, 1, 1, 1, 1]), "lengths must be a list of numbers"),
    ],
)
def test_a_hand_edited_frontier_is_refused_naming_the_field(edit, message, tmp_path, capsys):
    frontier = json.loads((DEFAULT_MODEL / "frontier.json").read_text())
    edit(frontier)
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, folder)
    (folder / "frontier.json").write_text(json.dumps(frontier))
    assert main(["plot", "--model", str(folder), "--out", str(tmp_path / "frontier.png")]) == 2
    err = capsys.readouterr().err
    assert "is not a valid frontier file" in err and message in err
    assert not (tmp_path / "frontier.png").exists()
