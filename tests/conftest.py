"""Tiny random BERT QA checkpoints in the transformers layout, made once per test session."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
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


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts are not a package)."""
    path = Path(__file__).parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


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


def make_mpnet(folder: Path, seed: int = 11) -> Path:
    """A tiny random MPNet whose vocabulary is the test vocabulary shifted by 4 behind MPNet's
    own special tokens, as all-mpnet-base-v2's is bert-base-uncased's."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import MPNetConfig, MPNetForQuestionAnswering, MPNetTokenizerFast

    pieces = ["<s>", "<pad>", "</s>", "<unk>", *(FIXTURES / "vocab.txt").read_text().splitlines(), "<mask>"]
    backend = Tokenizer(WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
    MPNetTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="[UNK]",
        pad_token="<pad>",
        mask_token="<mask>",
    ).save_pretrained(folder)
    torch.manual_seed(seed)
    config = MPNetConfig(
        vocab_size=len(pieces),
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
    )
    MPNetForQuestionAnswering(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """gelu, safetensors."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-gelu"))


@pytest.fixture(scope="session")
def tiny_relu_bin(tmp_path_factory) -> Path:
    """relu, like Intel/dynamic_tinybert, saved as a pickle (pytorch_model.bin)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-relu"), seed=1, safe=False, hidden_act="relu")


def with_random_selector(folder: Path, seed: int = 0):
    """The model in `folder` with a random learned selector whose scores spread widely."""
    from dynamic_tinybert import checkpoint
    from dynamic_tinybert.selector import SelectorConfig, TokenSelector

    net, tokenizer, _ = checkpoint.load(folder)
    torch.manual_seed(seed)
    net.selector = TokenSelector(SelectorConfig(net.config.hidden_size, net.config.num_hidden_layers, 16))
    for scorer in net.selector.scorers:
        torch.nn.init.normal_(scorer.out.weight, std=2.0)
    return net, tokenizer


def kept_per_layer(net, batch, lengths, **options):
    """The original positions each dropping layer keeps, row 0; options go to the model."""
    from dynamic_tinybert import model

    kept = []
    original = model.Tokens.keep

    def record(self, kept_slots):
        chosen, tokens = original(self, kept_slots)
        kept.append(sorted((tokens.origin % batch["input_ids"].shape[1]).tolist()))
        return chosen, tokens

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(model.Tokens, "keep", record)
        net(**batch, lengths=lengths, **options)
    return kept


@pytest.fixture(scope="session")
def tiny_selector_model(tmp_path_factory) -> Path:
    """The tiny gelu model with a random learned selector, saved."""
    from dynamic_tinybert import checkpoint

    net, tokenizer = with_random_selector(make_checkpoint(tmp_path_factory.mktemp("tiny-selector-start")))
    return checkpoint.save(net, tokenizer, tmp_path_factory.mktemp("tiny-selector") / "model")


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


def run_model_card_quick_start(folder: Path) -> str:
    """Run the quick-start code of the Intel/dynamic_tinybert model card, with only the model
    name replaced, in plain transformers in a fresh process; its stdout."""
    code = textwrap.dedent(
        f"""
        import torch
        from transformers import BertTokenizer, BertForQuestionAnswering

        model_name = {str(folder)!r}
        tokenizer = BertTokenizer.from_pretrained(model_name)
        model = BertForQuestionAnswering.from_pretrained(model_name)

        context = "remember the number 123456, I'll ask you later."
        question = "What is the number I told you?"

        # Tokenize the context and question
        tokens = tokenizer.encode_plus(question, context, return_tensors="pt", truncation=True)

        # Get the input IDs and attention mask
        input_ids = tokens["input_ids"]
        attention_mask = tokens["attention_mask"]

        # Perform question answering
        outputs = model(input_ids, attention_mask=attention_mask)
        start_scores = outputs.start_logits
        end_scores = outputs.end_logits

        # Find the start and end positions of the answer
        answer_start = torch.argmax(start_scores)
        answer_end = torch.argmax(end_scores) + 1
        answer = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(input_ids[0][answer_start:answer_end]))

        # Print the answer
        print("Answer:", answer)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


# The test files that take longest, longest first. With `-n` (pyproject.toml's addopts) each
# worker takes a whole file at a time, in this order (--no-loadscope-reorder): a long file taken
# last would run on alone after the others end. The seconds are what each file's tests took in
# `python -m pytest -q --durations=0` (two workers, 2 cores of an AVX2 EPYC, 2026-11-28).
LONGEST_FIRST = (
    "test_train.py",  # 299
    "test_accelerator.py",  # 228
    "test_teacher.py",  # 153
    "test_search.py",  # 112
    "test_recipe.py",  # 94
    "test_server.py",  # 57
    "test_benchmarks.py",  # 35
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as collected


def pytest_terminal_summary(terminalreporter) -> None:
    """Skipped tests, counted by reason, with what to do: a run without the data is not green."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section(f"{len(skipped)} tests were skipped, and why", sep="-", yellow=True)
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:4d}  {reason}")
    if any("not found at" in reason for reason in reasons):
        terminalreporter.write_line(
            "The training, search and evaluation tests read SQuAD-format files from ../shared/data "
            "(beside the checkout) or from $DYNAMIC_TINYBERT_DATA: see 'Data' in the README."
        )
