"""Which torch devices this machine can run on, and a clear error for one it cannot."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device name torch does not know, or one this torch build or machine cannot use."""


def usable_devices() -> list[str]:
    """The devices this torch can run on here, e.g. ["cpu"] or ["cpu", "cuda", "cuda:0", "cuda:1"]."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device `name` stands for, if this machine can use it.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("gpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dynamic_tinybert.devices.DeviceError: device 'gpu' is not a torch device; this torch can use: cpu...
    """
    usable = usable_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"device {name!r} is not a torch device; this torch can use: {', '.join(usable)}"
        ) from None
    if device.type == "cpu":
        return device
    if str(device) not in usable:
        why = {
            "cuda": "it was built without CUDA or sees no GPU"
            if not torch.cuda.is_available()
            else f"it sees {torch.cuda.device_count()} GPU(s)",
        }.get(device.type, "it was not built for it or the machine lacks it")
        raise DeviceError(
            f"this torch ({torch.__version__}) cannot use device {str(device)!r}: {why}; "
            f"it can use: {', '.join(usable)}"
        )
    return device
