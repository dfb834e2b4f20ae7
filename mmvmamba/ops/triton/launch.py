"""Small helpers shared by the Triton launchers."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ['device_guard']


def device_guard(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Make ``tensor``'s CUDA device current while a kernel launches (no-op off CUDA).

    Triton launches on the current device; tensors on another GPU would otherwise be read from
    the wrong one.
    """
    if tensor.is_cuda:
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
