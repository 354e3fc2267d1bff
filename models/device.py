"""Which device trains: ``--device auto|cpu|cuda|cuda:N|mps`` and ``INFERPRUNE_DEVICE``.

The device belongs to the process that trains (a CLI command, a worker), never to a job
spec: the same job runs on a CPU worker and a GPU worker alike. Pruning surgery and cost
counting stay on the CPU; BatchNorm recalibration, fine-tuning, evaluation and
distillation run on the device (the functions of :mod:`models.train` follow the model's
own device).
"""

from __future__ import annotations

import os
import re

import torch

from models.errors import ModelsError

__all__ = [
    "DEVICE_ENV",
    "DeviceError",
    "accelerator_count",
    "describe_device",
    "device_names",
    "resolve_device",
    "synchronize",
]

DEVICE_ENV = "INFERPRUNE_DEVICE"
"""Environment variable giving the default device (``auto`` when unset)."""

_FORM = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


class DeviceError(ModelsError):
    """A device that is not valid or not available on this machine."""


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def accelerator_count(kind: str = "cuda") -> int:
    """Return how many devices of ``kind`` (``cuda`` or ``mps``) torch sees here."""
    if kind == "cuda":
        return _cuda_count()
    if kind == "mps":
        return 1 if _mps_available() else 0
    return 0


def resolve_device(name: str | None = None, *, flag: str = "--device") -> torch.device:
    """Return the torch device ``name`` stands for on this machine.

    ``None`` reads :data:`DEVICE_ENV` (default ``auto``). ``auto`` takes the first CUDA
    device, else MPS, else the CPU; ``cuda`` is ``cuda:0``.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        flag: how the user gave it, named in error messages (``--device`` on the
            command line; :data:`DEVICE_ENV` when ``name`` is None).

    Raises:
        DeviceError: the name is not one of those forms, or the device is not there;
            the message says what this machine has.
    """
    if name is None:
        name, flag = os.environ.get(DEVICE_ENV, "auto"), DEVICE_ENV
    text = name.strip().lower()
    match = _FORM.match(text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(f"{flag} {text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if _cuda_count():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise DeviceError(
                f"{flag} mps: torch sees no Apple GPU here ({_have()}); use {flag} auto or cpu"
            )
        return torch.device("mps")
    count = _cuda_count()
    number = int(index) if index is not None else 0
    if number >= count:
        raise DeviceError(
            f"{flag} {text}: torch sees {_have()}; use {flag} auto or cpu"
            + (f", or cuda:0 to cuda:{count - 1}" if count > 1 else "")
        )
    return torch.device("cuda", number)


def _have() -> str:
    count = _cuda_count()
    if count:
        return f"{count} CUDA device(s)"
    built = "a CUDA build of torch" if torch.version.cuda else "a CPU-only build of torch"
    return f"no CUDA device ({built})"


def device_names(kind: str = "cuda") -> list[str]:
    """Return ``cuda:0`` … for every visible device of ``kind`` (empty when none)."""
    return [f"{kind}:{i}" for i in range(accelerator_count(kind))] if kind == "cuda" else []


def describe_device(device: torch.device) -> str:
    """Return the device with its hardware name, e.g. ``cuda:0 (NVIDIA H200)``, for
    logs and reports (``cpu`` as is)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
