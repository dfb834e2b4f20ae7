"""The compiled selective-scan op (C++ for CPU, CUDA for GPU) from ``kernels/selective_scan``.

The shared library ``mmvmamba._C`` defines, with ``TORCH_LIBRARY``, the custom ops
``torch.ops.mmvmamba.selective_scan_fwd``, ``selective_scan_fwd_train`` (the forward for
training: the output and the checkpoints its backward starts from) and ``selective_scan_bwd``.
The library also registers the autograd formula (in C++, for speed). This module loads it on first
use and adds the fake implementations (``torch.library.register_fake``) that ``torch.compile``
and ``torch.library.opcheck`` need.

Loading is lazy so that ``import mmvmamba.ops`` works without the library; the dispatcher then
reports the compiled backend as unavailable, with the build command, and refuses it if forced.
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['selective_scan', 'availability', 'load', 'library_path', 'built_cuda_archs',
           'BUILD_HINT']

BUILD_HINT = ('build it from the repository root with '
              '`pip install --no-build-isolation -v -e .` or '
              '`python setup.py build_ext --inplace` (needs a C++ compiler with OpenMP; for the '
              'CUDA part also nvcc and a visible GPU, or MMVMAMBA_CUDA_ARCH_LIST, e.g. "9.0")')

_STATE = {'module': None, 'error': None}


def _register_python_parts(module) -> None:
    """Attach fake implementations (for torch.compile / FakeTensor) to the library's ops.

    Autograd is registered in C++ (``kernels/selective_scan/selective_scan_autograd.cpp``):
    ``torch.library.register_autograd`` added several hundred microseconds per
    forward+backward, which dominated small scans on the GPU.
    """

    @torch.library.register_fake('mmvmamba::selective_scan_fwd')
    def _fwd_fake(u, delta, A, B, C, D, delta_bias, delta_softplus):
        return u.new_empty(u.shape, dtype=torch.float32)

    stride = module.state_stride()

    @torch.library.register_fake('mmvmamba::selective_scan_fwd_train')
    def _fwd_train_fake(u, delta, A, B, C, D, delta_bias, delta_softplus):
        out = u.new_empty(u.shape, dtype=torch.float32)
        if u.device.type != 'cuda':  # only the CUDA backward starts from checkpoints
            return out, u.new_empty((0,), dtype=torch.float32)
        batch, channels, length = u.shape
        slots = (length + stride - 1) // stride
        return out, u.new_empty((A.shape[1], batch, channels, slots), dtype=torch.float32)

    @torch.library.register_fake('mmvmamba::selective_scan_bwd')
    def _bwd_fake(dout, u, delta, A, B, C, D, delta_bias, delta_softplus, states=None):
        channels = u.shape[1]
        f32 = dict(dtype=torch.float32)
        return (torch.empty_like(u, memory_format=torch.contiguous_format),
                torch.empty_like(delta, memory_format=torch.contiguous_format),
                A.new_empty(A.shape, **f32),
                torch.empty_like(B, memory_format=torch.contiguous_format),
                torch.empty_like(C, memory_format=torch.contiguous_format),
                u.new_empty((channels,), **f32), u.new_empty((channels,), **f32))


def load():
    """Import ``mmvmamba._C`` once and register its Python parts.

    Returns:
        module: The loaded extension module.

    Raises:
        ImportError: The library is missing or fails to load; the message says how to build it.
    """
    if _STATE['module'] is not None:
        return _STATE['module']
    if _STATE['error'] is not None:
        raise ImportError(_STATE['error'])
    try:
        from mmvmamba import _C
    except ImportError as exc:
        _STATE['error'] = (f'the compiled op mmvmamba._C could not be loaded ({exc}); '
                           f'{BUILD_HINT}')
        raise ImportError(_STATE['error']) from exc
    _register_python_parts(_C)
    _STATE['module'] = _C
    return _C


def library_path() -> str:
    """Path of the loaded ``mmvmamba._C`` shared library (loads it if needed)."""
    return os.path.abspath(load().__file__)


def built_cuda_archs() -> str:
    """CUDA architectures the library was built for, e.g. ``'9.0'``; ``''`` for a CPU-only build."""
    return load().cuda_archs()


def availability(device: torch.device) -> Tuple[bool, str]:
    """Whether the compiled op can run on ``device``; the reason (and the fix) if not."""
    try:
        module = load()
    except ImportError as exc:
        return False, str(exc)
    if device.type == 'cpu':
        return True, ''
    if device.type == 'cuda':
        if not module.with_cuda():
            return False, ('mmvmamba._C was built without CUDA (no GPU was visible at build '
                           'time); rebuild with MMVMAMBA_CUDA_ARCH_LIST set, e.g. '
                           f'MMVMAMBA_CUDA_ARCH_LIST=9.0; {BUILD_HINT}')
        return True, ''
    return False, f'mmvmamba._C has no kernel for device type {device.type!r}'


def selective_scan(u: Tensor,
                   delta: Tensor,
                   A: Tensor,
                   B: Tensor,
                   C: Tensor,
                   D: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = True) -> Tensor:
    """Selective scan through the compiled op; same contract as ``ops.selective_scan``.

    Args:
        u (Tensor): ``(B, K*Cg, L)``, fp32/fp16/bf16.
        delta (Tensor): ``(B, K*Cg, L)``, same dtype as ``u``.
        A (Tensor): ``(K*Cg, N)`` fp32.
        B (Tensor): ``(B, K, N, L)``, dtype of ``u`` or fp32.
        C (Tensor): ``(B, K, N, L)``, dtype of ``u`` or fp32.
        D (Tensor, optional): ``(K*Cg,)`` fp32.
        delta_bias (Tensor, optional): ``(K*Cg,)`` fp32.
        delta_softplus (bool): Default: True.

    Returns:
        Tensor: ``(B, K*Cg, L)`` fp32.
    """
    if _STATE['module'] is None:
        load()
    return torch.ops.mmvmamba.selective_scan_fwd(u, delta, A, B, C, D, delta_bias,
                                                 delta_softplus)
