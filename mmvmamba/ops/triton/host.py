"""The C++ issue of Triton ops' eager passes (``mmvmamba._C``, ``kernels/triton_host``).

The eager training step at batch 128 is bound by the host's time to issue it, and each
Python-level torch call, ``autograd.Function`` and Triton launch costs tens of microseconds of
it. The extension therefore carries whole eager passes in C++ (the channel-first LayerNorm and
the fused SS2D core; :data:`CPP_PASSES` says which are used), whose ATen ops are issued from
C++ and whose Triton kernels are launched with ``cuLaunchKernel`` by handle.

The first launch of each specialisation comes back here (:func:`_resolve`): it launches through
Triton, which compiles the kernel if needed, and hands the compiled kernel's handle to C++. In
the models, CPU tensors (Triton's interpreter), Triton launch hooks (e.g. the proton profiler)
and ``torch.compile`` tracing of the LayerNorm use the Python passes (the core's torch.compile
custom ops run its C++ passes); ``MMVMAMBA_TRITON_HOST=0`` forces them. Tests
run the C++ passes on CPU tensors too (:func:`interpreted_cpp_ops`): every launch then comes
back here, to Triton's interpreter.
"""
from __future__ import annotations

import ctypes
import functools
import os

import torch
from torch import Tensor

from .launch import launch_hooks_set
from .layer_norm_2d_kernels import layer_norm_2d_bwd_kernel, layer_norm_2d_fwd_kernel
from .ss2d_scan import ss2d_scan_bwd_kernel, ss2d_scan_fwd_kernel
from .transpose import _copy_tiles_kernel, _merge_orders_kernel, _scan_orders_kernel

__all__ = ['CPP_PASSES', 'cpp_ops', 'cpp_ops_for', 'interpreted_cpp_ops', 'why_python_passes']

#: Which Triton ops issue their CUDA passes from C++ (tests and benchmarks may change it): in
#: eager mode, and for ``ss2d_core`` also inside its torch.compile custom ops. Their C++ passes
#: match the Python ones to the bit under Triton's interpreter and match the reference on the
#: GPU (tests/test_ops/test_triton_ss2d_core.py, test_triton_layer_norm_2d.py).
CPP_PASSES = {'layer_norm_2d': True, 'ss2d_core': True}

#: The kernels C++ launches, by the name it gives them.
KERNELS = {
    'layer_norm_2d_fwd': layer_norm_2d_fwd_kernel,
    'layer_norm_2d_bwd': layer_norm_2d_bwd_kernel,
    'scan_orders': _scan_orders_kernel,
    'merge_orders': _merge_orders_kernel,
    'copy_tiles': _copy_tiles_kernel,
    'ss2d_scan_fwd': ss2d_scan_fwd_kernel,
    'ss2d_scan_bwd': ss2d_scan_bwd_kernel,
}

ENV = 'MMVMAMBA_TRITON_HOST'


def _logger():
    from mmengine.logging import MMLogger
    return MMLogger.get_current_instance()


def _resolve(name: str, grid: tuple, args: tuple, meta: dict) -> tuple[int, int, int, int] | None:
    """A launch C++ hands back: launch ``KERNELS[name]`` through Triton. For CUDA tensors (the
    first launch of a specialisation) return ``(function handle, num_warps, shared memory
    bytes, run-time parameter count)``; the count (Triton's run-time arguments plus its two
    scratch pointers) lets C++ check that it packs parameters as this Triton release expects.
    CPU tensors (Triton's interpreter) come back at every launch; nothing is returned."""
    compiled = KERNELS[name][grid](*args, **meta)
    if not args[0].is_cuda:
        return None
    meta_data = compiled.metadata
    unsupported = {key: getattr(meta_data, key, 0) for key in (
        'global_scratch_size', 'profile_scratch_size', 'launch_cooperative_grid', 'launch_pdl')}
    if meta_data.num_ctas != 1 or any(unsupported.values()):
        raise RuntimeError(f'mmvmamba: {name} compiled to a launch the C++ launcher does not '
                           f'make (num_ctas={meta_data.num_ctas}, {unsupported}); set {ENV}=0')
    runtime = sum(kind != 'constexpr' for kind in compiled.src.signature.values())
    return compiled.function, meta_data.num_warps, meta_data.shared, runtime + 2


def cpp_ops_for(op: str, x: Tensor):
    """``mmvmamba._C`` when ``op``'s eager pass over ``x`` is to be issued from C++ (a CUDA
    tensor, ``CPP_PASSES[op]``, not under ``torch.compile`` tracing, no Triton launch hook
    installed, the extension built with CUDA), else None: then the op runs its Python passes."""
    if not (x.is_cuda and CPP_PASSES[op]) or torch.compiler.is_compiling() or launch_hooks_set():
        return None
    return cpp_ops()


def why_python_passes() -> tuple[str, str] | None:
    """Why the Triton ops cannot issue their CUDA passes from C++ here, as ``(reason, fix)``;
    None when they can (short of the driver check in :func:`cpp_ops`)."""
    from .. import compiled

    if os.environ.get(ENV, '1') == '0':
        return f'{ENV}=0', ''
    try:
        module = compiled.load()
    except ImportError as exc:
        return str(exc), ''
    if not hasattr(module, 'triton_host_set_launcher'):
        return ('mmvmamba._C was built without CUDA', 'rebuild with MMVMAMBA_CUDA_ARCH_LIST '
                f'set (e.g. 9.0): {compiled.BUILD_HINT}')
    return None


@functools.cache
def cpp_ops():
    """``mmvmamba._C`` set up to launch Triton kernels, or None, with the reason logged once
    (then every Triton op runs its Python passes: more host time per step)."""
    from .. import compiled

    why = why_python_passes()
    if why is not None:
        reason, fix = why
        if reason == f'{ENV}=0':
            _logger().info(f'mmvmamba: {ENV}=0: Triton ops issue their eager passes from Python')
        else:
            _logger().warning(f'mmvmamba: {reason}, so Triton ops issue their eager passes from '
                              f'Python, which costs more host time per step'
                              f'{"; " + fix if fix else ""}')
        return None
    module = compiled.load()
    try:
        launch_kernel = ctypes.CDLL('libcuda.so.1').cuLaunchKernel
    except (OSError, AttributeError) as exc:
        _logger().warning(f'mmvmamba: Triton ops issue their eager passes from Python, which '
                          f'costs more host time per step: the CUDA driver library has no '
                          f'usable cuLaunchKernel ({exc})')
        return None
    module.triton_host_set_launcher(ctypes.cast(launch_kernel, ctypes.c_void_p).value)
    module.triton_host_set_resolver(_resolve)
    return module


def interpreted_cpp_ops():
    """``mmvmamba._C`` set up for CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``;
    every launch comes back to Python): the C++ passes tested without a GPU."""
    from .. import compiled

    module = compiled.load()
    module.triton_host_set_resolver(_resolve)
    return module
