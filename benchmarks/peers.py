"""The systems our model is measured against, on the same weights (shared by the benchmarks):
transformers' BertForQuestionAnswering in a precision, and ONNX Runtime (the transformers model
exported to ONNX, in fp32 and with onnxruntime's int8 dynamic quantization; `pip install -e
".[bench]"`). `Peer` puts any of them behind our model's call, so that the reader's windowing and
answer ranking run unchanged around it and only the network differs.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from dynamic_tinybert import QuestionAnswerer
from dynamic_tinybert.model import QAOutput
from dynamic_tinybert.precision import apply_dtype

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEV = Path(__file__).parents[1] / "../shared/data/squad/dev-v1.1.json"
Network = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]  # batch -> logits


class Peer(nn.Module):
    """A network of another system behind our model's call (full length only)."""

    def __init__(self, network: Network, config):
        super().__init__()
        self.network, self.config = network, config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, lengths=None, **_) -> QAOutput:
        if lengths is not None:
            raise ValueError("the peers run the full model only")
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return QAOutput(*self.network(batch))


def peer_reader(network: Network, qa: QuestionAnswerer) -> QuestionAnswerer:
    """qa's reader (tokenizer, windows, answer ranking) around another system's network."""
    return QuestionAnswerer(Peer(network, qa.model.config), qa.tokenizer, qa.folder, dtype="fp32")


def transformers_in(dtype: str, folder: Path) -> Network:
    """transformers' model in that precision: bf16 weights, or its encoder's linear maps
    quantized as precision.apply_dtype quantizes ours (int8 per-channel weights)."""
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    elif dtype == "int8":
        model.bert.encoder = apply_dtype(model.bert.encoder, "int8")

    def run(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(**batch)
        return out.start_logits.float(), out.end_logits.float()

    return run


def onnx_runtime(path: Path) -> Network:
    """An ONNX Runtime session on the CPU with as many threads as torch uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = session.run(None, {k: batch[k].numpy() for k in INPUTS})
        return torch.from_numpy(start), torch.from_numpy(end)

    return run


def export_onnx(folder: Path, out: Path) -> tuple[Path, Path]:
    """fp32 and int8 (onnxruntime.quantization.quantize_dynamic) ONNX files of the transformers
    model in `folder`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForQuestionAnswering

    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval().float()
    example = torch.ones(2, 16, dtype=torch.long)
    fp32, int8 = out / "model.onnx", out / "model-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example, example, torch.zeros_like(example)),
            fp32,
            input_names=list(INPUTS),
            output_names=["start_logits", "end_logits"],
            dynamic_axes={
                name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "start_logits", "end_logits")
            },
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def dev_parser(doc: str) -> argparse.ArgumentParser:
    """The options of an end-to-end benchmark on the first questions of SQuAD dev."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dynamic_tinybert/default_model")
    parser.add_argument("--data", default=str(DEV))
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    return parser
