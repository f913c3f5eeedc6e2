"""Inference in fp32, bf16 and int8 (dynamic_tinybert/precision.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from dynamic_tinybert import QuestionAnswerer, checkpoint, precision
from dynamic_tinybert.cli import main
from dynamic_tinybert.precision import DtypeError, apply_dtype, check_dtype, dtype_name

from .conftest import CONTEXT, with_random_selector
from .test_model import CONFIGS, assert_batch_equals_each_row_alone, random_batch

needs_bf16 = pytest.mark.skipif(not precision.cpu_has_bf16(), reason="this CPU has no native bf16")
# bf16 keeps 8 bits of mantissa: a padded batch and a row alone round differently, by about a
# hundredth of the logits' scale. int8 runs each window's tokens apart, in the linear maps (whose
# input it quantizes by the input's range) and in attention (whose last bits a quantization step
# would amplify), so a window's logits are the same bits in any batch.
TOLERANCE = {"fp32": 1e-5, "bf16": 0.1, "int8": 0.0}
RUNNABLE = ["fp32", pytest.param("bf16", marks=needs_bf16), "int8"]


@pytest.mark.parametrize("dtype", RUNNABLE[1:])  # fp32: test_selector's batch-equals-alone test
@pytest.mark.parametrize("lengths", CONFIGS)
def test_every_configuration_runs_in_every_dtype_and_batched_equals_each_row_alone(
    tiny_selector_model, dtype, lengths
):
    net, _, _ = checkpoint.load(tiny_selector_model)
    net = apply_dtype(net.eval(), dtype)
    assert_batch_equals_each_row_alone(net, lengths, atol=TOLERANCE[dtype])


def test_int8_windows_get_the_same_bits_in_a_batch_under_margins(tiny_selector_model):
    # (by the attention selector, a window that keeps all of its tokens at a layer where its
    # batch-mates drop some runs that layer's attention unfused in the batch, fused alone: the
    # last bits differ, as in fp32)
    net, _, _ = checkpoint.load(tiny_selector_model)
    assert_batch_equals_each_row_alone(apply_dtype(net.eval(), "int8"), atol=0.0, margins=1.0)


@pytest.mark.parametrize("dtype", RUNNABLE[1:])
def test_lower_precisions_stay_close_to_fp32(tiny_model, dtype):
    reference, _ = with_random_selector(tiny_model)
    lowered, _ = with_random_selector(tiny_model)
    lowered = apply_dtype(lowered.eval(), dtype)
    batch = random_batch(reference.config.vocab_size, [40, 25, 33], seed=5)
    with torch.no_grad():
        for lengths in (None, (1.0, 0.8, 0.6, 0.4)):
            a = reference.eval()(**batch, lengths=lengths, selector="learned").start_logits
            b = lowered(**batch, lengths=lengths, selector="learned").start_logits.float()
            scale = a.abs().max()
            assert (a - b).abs().max() < 0.1 * scale, (dtype, lengths)
    if dtype == "bf16":
        assert next(p for p in lowered.layers.parameters()).dtype == torch.bfloat16
        assert lowered.selector.dtype == torch.float32  # small products of ever new shapes
    else:
        dynamic = torch.ao.nn.quantized.dynamic.Linear
        quantized = [m for m in lowered.layers.modules() if isinstance(m, dynamic)]
        assert len(quantized) == 6 * len(lowered.layers)
        # one scale per output channel; all 8 bits of the activations where the CPU has VNNI
        assert all(m.weight().qscheme() == torch.per_channel_affine for m in quantized)
        assert all(isinstance(m, precision.WindowQuantizedLinear) and m.per_window for m in quantized)
        assert all(m.full_range == precision.cpu_has_vnni() for m in quantized)
        assert lowered.qa_head.weight.dtype == torch.float32  # the head and the selector stay fp32


@pytest.mark.parametrize("dtype", RUNNABLE)
def test_the_api_and_the_cli_answer_in_each_dtype_and_say_which(tiny_selector_model, dtype, capsys):
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype=dtype)
    assert qa.dtype == dtype
    result = qa(question="who wrote it?", context=CONTEXT)
    assert result["answer"]
    code = main(
        [
            "ask",
            "--model",
            str(tiny_selector_model),
            "--question",
            "who wrote it?",
            "--context",
            CONTEXT,
            "--dtype",
            dtype,
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["dtype"] == dtype
    # a torch dtype is accepted too
    if dtype == "bf16":
        assert QuestionAnswerer.from_pretrained(tiny_selector_model, dtype=torch.bfloat16).dtype == "bf16"


def test_a_dtype_the_machine_cannot_run_is_refused_with_the_reason(tiny_model, monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    with pytest.raises(DtypeError, match="AVX512-BF16 or AMX"):
        check_dtype("bf16", torch.device("cpu"))
    with pytest.raises(DtypeError, match="CPU only"):
        check_dtype("int8", torch.device("cuda"))
    with pytest.raises(DtypeError, match="not one of fp32, bf16, int8"):
        dtype_name("fp16")
    with pytest.raises(DtypeError, match="AVX512-BF16"):
        QuestionAnswerer.from_pretrained(tiny_model, dtype="bf16")
    code = main(["ask", "--model", str(tiny_model), "--question", "q", "--context", "c d", "--dtype", "bf16"])
    assert code == 2 and "AVX512-BF16 or AMX" in capsys.readouterr().err


def _bf16_linear_pair(d_in: int, d_out: int) -> tuple[torch.nn.Linear, precision.RowPaddedLinear]:
    """An nn.Linear in bf16 and a RowPaddedLinear with the same weights."""
    torch.manual_seed(0)
    plain = torch.nn.Linear(d_in, d_out).to(torch.bfloat16)
    padded = torch.nn.Linear(d_in, d_out).to(torch.bfloat16)
    padded.load_state_dict(plain.state_dict())
    padded.__class__ = precision.RowPaddedLinear
    return plain, padded


def test_padded_linear_maps_give_the_unpadded_results():
    plain, padded = _bf16_linear_pair(16, 8)
    for rows in (1, 37, 256, 300):
        x = torch.randn(rows, 16, dtype=torch.bfloat16)
        a, b = plain(x), padded(x)
        assert b.shape == (rows, 8) and torch.allclose(a.float(), b.float(), atol=0.02)
    x3 = torch.randn(2, 5, 16, dtype=torch.bfloat16)  # not packed: passed through as it is
    assert torch.equal(plain(x3), padded(x3))
    assert list(padded.state_dict()) == ["weight", "bias"]


@pytest.mark.skipif(
    not precision._CAN_PACK, reason="this torch build has no oneDNN linear, or this CPU no native bf16"
)
def test_bf16_linear_maps_reorder_their_weight_once_and_again_when_it_changes():
    plain, fast = _bf16_linear_pair(64, 48)
    x = torch.randn(40, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.allclose(fast(x).float(), plain(x).float(), atol=0.05)
        packed = fast.__dict__["_packed"][1]
        fast(x)
        assert fast.__dict__["_packed"][1] is packed  # reordered once, not at every call
        assert torch.equal(copy.deepcopy(fast)(x), fast(x))  # copies leave the reordered weight out
    with torch.no_grad():
        plain.weight.mul_(-2)
    fast.load_state_dict(plain.state_dict())  # copies into the same parameter: a new version
    with torch.inference_mode():
        assert torch.allclose(fast(x).float(), plain(x).float(), atol=0.1)
        assert fast.__dict__["_packed"][1] is not packed
    # training through it: nn.Linear's autograd, the gradient as without the layout
    y = fast(x.float().requires_grad_().to(torch.bfloat16))
    y.float().sum().backward()
    assert fast.weight.grad is not None and fast.weight.grad.shape == (48, 64)


@needs_bf16
def test_bf16_on_the_cpu_pads_every_linear_map(tiny_selector_model):
    qa = QuestionAnswerer.from_pretrained(tiny_selector_model, dtype="bf16")
    linears = [m for m in qa.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, precision.RowPaddedLinear) for m in linears)
