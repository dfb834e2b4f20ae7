"""Small helpers shared by the Triton launchers: host-side launch arithmetic and a cheaper launch.

Why a launch helper: the eager training step at batch 128 is bound by the host's time to issue
it, and ``kernel[grid](*args, **meta)`` costs about 70 us of host time per call on the H100
machine (an ATen op about 12 us; docs/benchmarks.md, session 10): Triton binds and
specialises every argument, builds its cache key, checks the kernel's globals and asks for
the device and the stream each time. :func:`launch` does that once per specialisation: it
keeps the compiled kernel under a key that determines Triton's specialisation (every integer
argument by value, every tensor by dtype and 16-byte alignment, the compile-time arguments
and options by value) and on later calls hands the arguments straight to the compiled
kernel's launcher.
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor
from triton.runtime.jit import JITFunction

__all__ = ['cdiv', 'launch', 'launch_hooks_set', 'next_power_of_2']

#: Compiled kernels by launch key (see :func:`launch`); cleared when it outgrows the bound
#: (a key per distinct shape: a detector's multi-scale training makes many).
_COMPILED: dict = {}
_MAX_COMPILED = 4096


def cdiv(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` for host-side launch arithmetic. ``triton.cdiv`` and
    ``triton.next_power_of_2`` are Triton constexpr functions: each host call costs a few
    microseconds of argument unwrapping, and the eager step makes hundreds of them."""
    return -(-numerator // denominator)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``), see :func:`cdiv`."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


def _hook_set(hook) -> bool:
    """Is a Triton launch hook installed? Triton keeps them as a chain of calls (``.calls``,
    empty when none is) or, in older releases, as one callable or None."""
    return hook is not None and bool(getattr(hook, 'calls', True))


def launch_hooks_set() -> bool:
    """Is a Triton launch hook (e.g. the proton profiler's) installed? Then every launch must go
    through Triton, which calls it."""
    return (_hook_set(triton.knobs.runtime.launch_enter_hook)
            or _hook_set(triton.knobs.runtime.launch_exit_hook))


def _constexpr_tail(kernel: JITFunction, num_args: int, meta: dict) -> tuple:
    """Values of ``kernel``'s parameters after the first ``num_args`` (all compile-time), in
    order, from ``meta`` or their defaults: the compiled launcher takes every parameter."""
    tail = []
    for param in kernel.params[num_args:]:
        if not param.is_constexpr:
            raise TypeError(f'launch: {kernel.__name__} parameter {param.name!r} is not a '
                            f'tl.constexpr; pass every run-time argument positionally')
        tail.append(meta[param.name] if param.name in meta else param.default)
    return tuple(tail)


def launch(kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """``kernel[grid](*args, **meta)`` with a fraction of the host time after its first call.

    Args:
        kernel: A ``triton.jit`` function whose run-time parameters come first and are given
            positionally (``args``, the first a tensor); its compile-time parameters and
            launch options (``num_warps``...) are in ``meta``.
        grid (tuple): One to three program counts.
        args (tuple): The run-time arguments: tensors, ints, floats.
        meta (dict): Compile-time arguments and launch options (hashable values).

    The first call with a new key (see the module docstring) launches through Triton, which
    compiles or finds the kernel; the compiled kernel is then kept and launched directly. Under
    Triton's interpreter, under ``torch.compile`` tracing, or with a Triton launch hook set
    (e.g. the proton profiler) every call goes through Triton. Either way the kernel runs on
    the device of its first argument, made current for the launch when it is not (Triton
    launches on the current device); every tensor argument must be on that device.
    """
    if torch.compiler.is_compiling():  # traced: dynamo handles the device and the launch
        kernel[grid](*args, **meta)
        return
    first = args[0]
    if first.is_cuda:
        device = first.get_device()
        if device != torch._C._cuda_getDevice():
            with torch.cuda.device(device):
                _launch_on(device, kernel, grid, args, meta)
            return
    else:
        device = -1  # Triton's interpreter (CPU tensors)
    _launch_on(device, kernel, grid, args, meta)


def _launch_on(device: int, kernel, grid: tuple, args: tuple, meta: dict) -> None:
    """:func:`launch` once ``device`` (the index of the kernel's tensors) is current.

    On the cached path tensors reach the compiled launcher as their addresses (ints): given a
    tensor, Triton's launcher calls its ``data_ptr`` and asks the driver whether the address
    is device memory (``cuPointerGetAttribute``), per pointer argument and launch; given an
    int it takes the address as it is. The address is read here anyway, for the alignment in
    the key, and every tensor argument of these kernels is on ``device``.
    """
    if type(kernel) is not JITFunction or launch_hooks_set():
        kernel[grid](*args, **meta)
        return
    key = [kernel, device, *meta.items()]
    values = []
    for arg in args:
        if isinstance(arg, Tensor):
            if arg.get_device() != device:
                raise ValueError(f'launch: {kernel.__name__} got tensors on {args[0].device} '
                                 f'and {arg.device}; move them to one device')
            address = arg.data_ptr()
            key.append((arg.dtype, address % 16 == 0))
            values.append(address)
        else:
            key.append(arg)
            values.append(arg)
    key = tuple(key)
    entry = _COMPILED.get(key)
    if entry is None:
        compiled = kernel[grid](*args, **meta)
        if len(_COMPILED) >= _MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = (compiled, _constexpr_tail(kernel, len(args), meta))
        return
    compiled, tail = entry
    grid_x, grid_y, grid_z = (*grid, 1, 1)[:3]
    compiled.run(grid_x, grid_y, grid_z, torch._C._cuda_getCurrentRawStream(device),
                 compiled.function, compiled.packed_metadata, None, None, None, *values, *tail)
