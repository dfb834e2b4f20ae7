"""Small helpers shared by the Triton launchers."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ['device_guard', 'NO_OP']

#: A shared do-nothing context manager (reusable), for helpers that enter a context only when
#: it is needed: creating one per call costs host time on the eager step.
NO_OP = contextlib.nullcontext()


def device_guard(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Make ``tensor``'s CUDA device current while a kernel launches.

    Triton launches on the current device; tensors on another GPU would otherwise be read from
    the wrong one. A no-op (a shared null context) when the device is already current or the
    tensor is not on CUDA: entering ``torch.cuda.device`` costs host time on every launch, and
    the eager step is bound by host time.
    """
    if tensor.is_cuda and tensor.get_device() != torch.cuda.current_device():
        return torch.cuda.device(tensor.device)
    return NO_OP
