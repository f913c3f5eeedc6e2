"""Tiny random BERT QA checkpoints in the transformers layout, made once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

# tiny models gain nothing from threads, and spinning OpenMP threads slow everything down when
# the cores are busy; subprocesses of the tests inherit this too
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(os.environ.get("DYNAMIC_TINYBERT_DATA", Path(__file__).parents[2] / "shared" / "data"))
DEV = SHARED_DATA / "squad" / "dev-v1.1.json"

CONTEXT = (
    "The Amazon rainforest covers much of the Amazon basin of South America. The basin covers "
    "7,000,000 square kilometres, of which 5,500,000 square kilometres are covered by the rainforest. "
    "The region includes territory belonging to nine nations."
)


def tiny_config(**overrides) -> dict:
    vocab_size = len((FIXTURES / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_act="gelu",
        max_position_embeddings=512,
    )
    config.update(overrides)
    return config


def make_checkpoint(folder: Path, seed: int = 0, safe: bool = True, **overrides) -> Path:
    """A random transformers BertForQuestionAnswering saved with its tokenizer."""
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast

    torch.manual_seed(seed)
    model = BertForQuestionAnswering(BertConfig(**tiny_config(**overrides))).eval()
    # larger head weights than BERT's init, so that spans differ clearly in score
    torch.nn.init.normal_(model.qa_outputs.weight, std=0.5)
    model.save_pretrained(folder, safe_serialization=safe)
    BertTokenizerFast(vocab_file=str(FIXTURES / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """gelu, safetensors."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-gelu"))


@pytest.fixture(scope="session")
def tiny_relu_bin(tmp_path_factory) -> Path:
    """relu, like Intel/dynamic_tinybert, saved as a pickle (pytorch_model.bin)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-relu"), seed=1, safe=False, hidden_act="relu")


@pytest.fixture()
def squad_file(tmp_path) -> Path:
    """A small hand-made SQuAD file."""
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "Amazon",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "How large is the basin?",
                                "answers": [{"text": "7,000,000 square kilometres", "answer_start": 89}],
                            },
                            {
                                "id": "q2",
                                "question": "How many nations?",
                                "answers": [
                                    {"text": "nine", "answer_start": 229},
                                    {"text": "nine nations", "answer_start": 229},
                                ],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "small.json"
    path.write_text(json.dumps(data))
    return path


def needs_dev():
    return pytest.mark.skipif(not DEV.is_file(), reason=f"SQuAD dev not found at {DEV}")
