"""The C++ issue of Triton ops' eager passes (``mmvmamba._C``, ``kernels/triton_host``).

The eager training step at batch 128 is bound by the host's time to issue it, and each
Python-level torch call, ``autograd.Function`` and Triton launch costs tens of microseconds of
it. The extension's CUDA build therefore carries whole eager passes in C++ (first: the
channel-first LayerNorm, :func:`mmvmamba.ops.triton.layer_norm_2d.layer_norm_2d`), whose ATen
ops are issued from C++ and whose Triton kernels are launched with ``cuLaunchKernel`` by handle.

The first launch of each specialisation comes back here (:func:`_resolve`): it launches through
Triton, which compiles the kernel if needed, and hands the compiled kernel's handle to C++.
Triton's interpreter (CPU tensors), ``torch.compile`` tracing and Triton launch hooks (e.g. the
proton profiler) use the Python passes instead; ``MMVMAMBA_TRITON_HOST=0`` forces them.
"""
from __future__ import annotations

import ctypes
import functools
import os

from .layer_norm_2d_kernels import layer_norm_2d_bwd_kernel, layer_norm_2d_fwd_kernel

__all__ = ['cpp_ops']

#: The kernels C++ launches, by the name it gives them.
KERNELS = {
    'layer_norm_2d_fwd': layer_norm_2d_fwd_kernel,
    'layer_norm_2d_bwd': layer_norm_2d_bwd_kernel,
}

ENV = 'MMVMAMBA_TRITON_HOST'


def _logger():
    from mmengine.logging import MMLogger
    return MMLogger.get_current_instance()


def _resolve(name: str, grid: tuple, args: tuple, meta: dict) -> tuple[int, int, int, int]:
    """First launch of a specialisation, for C++: launch ``KERNELS[name]`` through Triton and
    return ``(function handle, num_warps, shared memory bytes, run-time parameter count)``;
    the count (Triton's run-time arguments plus its two scratch pointers) lets C++ check that
    it packs parameters as this Triton release expects."""
    compiled = KERNELS[name][grid](*args, **meta)
    meta_data = compiled.metadata
    unsupported = {key: getattr(meta_data, key, 0) for key in (
        'global_scratch_size', 'profile_scratch_size', 'launch_cooperative_grid', 'launch_pdl')}
    if meta_data.num_ctas != 1 or any(unsupported.values()):
        raise RuntimeError(f'mmvmamba: {name} compiled to a launch the C++ launcher does not '
                           f'make (num_ctas={meta_data.num_ctas}, {unsupported}); set {ENV}=0')
    runtime = sum(kind != 'constexpr' for kind in compiled.src.signature.values())
    return compiled.function, meta_data.num_warps, meta_data.shared, runtime + 2


@functools.cache
def cpp_ops():
    """``mmvmamba._C`` set up to launch Triton kernels, or None, with the reason logged once
    (then every Triton op runs its Python passes: more host time per step)."""
    from .. import compiled

    if os.environ.get(ENV, '1') == '0':
        _logger().info(f'mmvmamba: {ENV}=0: Triton ops issue their eager passes from Python')
        return None
    try:
        module = compiled.load()
    except ImportError as exc:
        _logger().warning(f'mmvmamba: Triton ops issue their eager passes from Python, which '
                          f'costs more host time per step: {exc}')
        return None
    if not hasattr(module, 'triton_host_init'):
        _logger().warning(
            'mmvmamba: mmvmamba._C was built without CUDA, so Triton ops issue their eager '
            'passes from Python, which costs more host time per step; rebuild with '
            f'MMVMAMBA_CUDA_ARCH_LIST set (e.g. 9.0): {compiled.BUILD_HINT}')
        return None
    launch_kernel = ctypes.CDLL('libcuda.so.1').cuLaunchKernel
    module.triton_host_init(ctypes.cast(launch_kernel, ctypes.c_void_p).value, _resolve)
    return module
