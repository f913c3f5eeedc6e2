"""The precision inference runs in: fp32, bf16 (the encoder's weights and activations in bfloat16,
on CPUs with AVX512-BF16 or AMX and on CUDA) or int8 (PyTorch's dynamic quantization of the
encoder layers' linear maps: int8 weights with one scale per output channel, each window's
activations quantized by their own range; CPU only).

A precision the machine cannot run well is refused with the reason, never replaced silently.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .processes import cpu_has_bf16, cpu_has_vnni

DTYPES = ("fp32", "bf16", "int8")
_BY_TORCH = {torch.float32: "fp32", torch.bfloat16: "bf16"}


class DtypeError(ValueError):
    """A precision this machine, device or torch build cannot run."""


class PrecisionFallback(UserWarning):
    """A model's default precision that this machine cannot run: it runs in fp32 instead."""


def dtype_name(dtype: str | torch.dtype) -> str:
    """ "fp32", "bf16" or "int8", from that name or a torch dtype.

    >>> dtype_name(torch.bfloat16), dtype_name("int8")
    ('bf16', 'int8')
    """
    name = _BY_TORCH.get(dtype) if isinstance(dtype, torch.dtype) else dtype
    if name not in DTYPES:
        raise DtypeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return name


def check_dtype(name: str, device: torch.device) -> None:
    """Raise DtypeError unless `device` runs `name` natively."""
    if name == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            raise DtypeError(
                "--dtype bf16 needs a CPU with AVX512-BF16 or AMX (this one would emulate it, slower "
                "than fp32); use --dtype fp32, or int8"
            )
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DtypeError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use --dtype fp32")
        if device.type not in ("cpu", "cuda"):
            raise DtypeError(f"--dtype bf16 runs on cpu or cuda, not {device.type}")
    if name == "int8":
        if device.type != "cpu":
            raise DtypeError(f"--dtype int8 (dynamic quantization) runs on the CPU only, not {device.type}")
        if not set(torch.backends.quantized.supported_engines) & {"x86", "fbgemm", "onednn"}:
            raise DtypeError("this torch build has no x86 quantization engine for --dtype int8")


# bf16 on the CPU: the model's linear maps get their packed tokens padded to a multiple of
# BF16_ROWS rows (SMALL_ROWS up to SMALL_UNTIL rows). A dropping layer hands each batch a new
# token count, and a bf16 (AMX) matrix product of a shape not seen before costs milliseconds; with
# few shapes, --budget 0.5 in bf16 on 400 dev questions went from 2.53 s to about 1.8 s. One window
# at a time pads less: a window of 192 tokens took 11.1 ms padded to 256 rows, 7.8 ms to 224
# (the same 1.8 s on the 400 questions).
BF16_ROWS = 256
SMALL_ROWS, SMALL_UNTIL = 32, 512


def padded_rows(n: int) -> int:
    """The row count a bf16 linear map runs n rows at.

    >>> padded_rows(192), padded_rows(200), padded_rows(600)
    (192, 224, 768)
    """
    step = SMALL_ROWS if n <= SMALL_UNTIL else BF16_ROWS
    return -(-n // step) * step


class RowPaddedLinear(nn.Linear):
    """nn.Linear for bf16 on the CPU: the same results, faster.

    Its (N, d) input is padded with zero rows to padded_rows(N) (the extra outputs dropped), so
    products come in few shapes. Outside autograd its weight is reordered once into oneDNN's
    blocked layout (`mkldnn._reorder_linear_weight`, what torch.compile's CPU freezing does), and
    kept beside the parameter: nn.Linear reorders it at every call, which at the row counts of one
    window costs as much as the product (384 -> 1536 on 192 rows: 169 us against 92 packed, on
    2 cores with AMX). The copy is made again whenever the weight changes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return super().forward(x)
        n = x.shape[0]
        if padded_rows(n) != n:
            x = torch.cat([x, x.new_zeros(padded_rows(n) - n, x.shape[1])])
        packed = self._packed_weight(x)
        if packed is None:
            return super().forward(x)[:n]
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")[:n]

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The weight in oneDNN's layout, where that op can run this product; else None."""
        w = self.weight
        on_cpu = x.device.type == w.device.type == "cpu"
        if not (_CAN_PACK and on_cpu and x.dtype == w.dtype == torch.bfloat16):
            return None
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
            return None  # training through it: nn.Linear's autograd
        # a weight made in inference mode has no version counter: its storage identifies it
        key = (w.data_ptr(), None if w.is_inference() else w._version)
        cached = self.__dict__.get("_packed")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach()))
            self.__dict__["_packed"] = cached
        return cached[1]

    def __getstate__(self) -> dict:
        """Copies and pickles leave the reordered weight out (oneDNN's layout cannot be saved);
        it is made again at the first call."""
        state = self.__dict__.copy()
        state.pop("_packed", None)
        return state


# oneDNN's bf16 linear needs the CPU's native bf16 too: on an AVX2 CPU the reorder raises
_CAN_PACK = (
    torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") and cpu_has_bf16()
)


class WindowQuantizedLinear(torch.ao.nn.quantized.dynamic.Linear):
    """PyTorch's dynamically quantized linear map, marked to run on each window's tokens apart.

    Dynamic quantization scales its whole input by one range, so in a batch a window's activations
    would be quantized by the range of its batch-mates too, and its answer would depend on them;
    the model (model.Layer) gives a map with `per_window` each window's tokens in turn. On CPUs
    with VNNI or AMX, `full_range` puts the activations on all 8 bits: PyTorch keeps 7 on x86
    against the 16-bit saturation of AVX2's int8 products, which VNNI does not have. The shipped
    model with per-channel weights, F1 on the first 1,000 dev questions: 71.59 with 8 bits, 70.86
    with 7 (fp32 71.85; per-tensor weights and 7 bits 66.77)."""

    per_window = True
    full_range = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params
        return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=not self.full_range).to(x.dtype)


def apply_dtype(model: nn.Module, name: str, device: torch.device | None = None) -> nn.Module:
    """The model in that precision (int8: the linear maps of its encoder layers quantized; the
    embeddings, the QA head and the selector's scorers stay fp32; bf16 on the CPU: every linear
    map a RowPaddedLinear, the selector in fp32)."""
    if name == "bf16":
        model = model.to(torch.bfloat16)
        selector = getattr(model, "selector", None)
        if selector is not None and (device is None or device.type == "cpu"):
            # its small products come in a new shape with each window's length, and on the CPU
            # a bf16 product of an unseen shape costs more than the selector's fp32 FLOPs: one
            # window at a time at --budget 0.5, 17.0 ms against 27.9 (12.1 at full length)
            selector.float()
        if device is None or device.type == "cpu":
            for module in model.modules():
                if type(module) is nn.Linear:
                    module.__class__ = RowPaddedLinear  # same parameters and state-dict keys
        return model
    model = model.float()
    if name == "int8":
        layers = getattr(model, "layers", None)
        target = layers if isinstance(layers, nn.Module) else model
        with warnings.catch_warnings():  # torch points eager-mode quantization users to torchao
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(
                target, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8
            )
        full_range = cpu_has_vnni()
        for module in quantized.modules():
            if type(module) is torch.ao.nn.quantized.dynamic.Linear:
                module.__class__ = WindowQuantizedLinear
                module.full_range = full_range
        if target is model:
            return quantized
        model.layers = quantized
    return model
