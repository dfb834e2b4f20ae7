"""Triton backends of mmvmamba's ops; importing this module registers them with the dispatcher.

- ``ss2d_core`` backend ``'fused'`` (:mod:`.ss2d_core`): the SS2D core for d_state N = 1 in one
  scan kernel per direction plus a GEMM and the output norm. CUDA tensors only.
- ``layer_norm_2d`` backend ``'triton'`` (:mod:`.layer_norm_2d`): channel-first LayerNorm
  without permute copies, on contiguous or channels-last maps. CUDA tensors only.

On CPU the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1``, set before
``triton`` is imported), which the tests use on tiny shapes; the dispatcher never picks them
for CPU tensors.
"""
from __future__ import annotations

import torch

from .. import dispatch
from .layer_norm_2d import layer_norm_2d
from .ss2d_core import ss2d_core_fused

__all__ = ['ss2d_core_fused', 'layer_norm_2d']

#: Priority over the reference (0) and below nothing else: 'auto' picks these on CUDA.
PRIORITY = 20


def _cuda_only(device: torch.device) -> tuple[bool, str]:
    if device.type != 'cuda':
        return False, (f'the Triton kernels run on CUDA tensors only (got a {device.type} '
                       f'tensor); use the reference backend on {device.type}')
    if not torch.cuda.is_available():
        return False, 'CUDA is not available to torch'
    return True, ''


dispatch.register('ss2d_core', 'fused', ss2d_core_fused, check=_cuda_only, priority=PRIORITY)
dispatch.register('layer_norm_2d', 'triton', layer_norm_2d, check=_cuda_only, priority=PRIORITY)
