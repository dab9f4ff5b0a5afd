"""One backend per deployment mode, each behind ``run(package, volume, device, report) -> Segmented``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PackageError


@dataclass
class Segmented:
    """A backend's answer: a label array on the input grid, the names of its values, stage timings."""

    labelmap: np.ndarray
    labels: dict
    colors: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    model_cached: bool = False


def create_backend(mode: str):
    """The backend object for ``mode``; the worker keeps one per mode so loaded models stay loaded."""
    if mode == "torchscript":
        from .torchscript import TorchScriptBackend

        return TorchScriptBackend()
    raise PackageError(f"{mode} mode is not available in this version of MonaiDeployer yet")


def resolve_device(requested: str):
    """"auto" is CUDA when this worker's torch can use a GPU, else the CPU; "cuda" without one is an error."""
    import torch

    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise PackageError(f"unknown device {requested!r} (use auto, cpu or cuda)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise PackageError(f"device {requested} was asked for, but this worker's torch {torch.__version__} "
                           f"({build}) sees no usable GPU; choose device cpu or auto")
    return torch.device(requested)


def one_line_cause(error: BaseException) -> str:
    """The line of a (possibly multi-line TorchScript) error message that says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    causes = [line for line in lines if "Error:" in line]
    text = causes[-1].split("Error:", 1)[1].strip() if causes else (lines[0] if lines else type(error).__name__)
    return text
