"""The cached Triton launch (``mmvmamba.ops.triton.launch.launch``) against Triton's own.

CPU: the check that every parameter after the positional arguments is compile-time.
GPU (``-m gpu``): a kernel launched twice per case (first through Triton, then straight to the
compiled kernel) over the specialisations Triton makes: an integer argument equal to 1 (it
becomes a constant the compiled launcher skips), unaligned pointers, each dtype, a default
compile-time argument.
"""
import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from mmvmamba.ops.triton import launch as launch_module


def _scale(src_ptr, dst_ptr, n, stride, FACTOR: tl.constexpr, BLOCK: tl.constexpr = 64):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    value = tl.load(src_ptr + offs * stride, mask=mask)
    tl.store(dst_ptr + offs, value * FACTOR, mask=mask)


def _runtime_last(src_ptr, BLOCK: tl.constexpr, n):
    pass


# Built explicitly (not with ``triton.jit``), so that they are compiled kernels even when the
# tests run under TRITON_INTERPRET=1.
SCALE_KERNEL = JITFunction(_scale)
RUNTIME_LAST_KERNEL = JITFunction(_runtime_last)


def test_constexpr_tail_takes_meta_then_defaults():
    assert launch_module._constexpr_tail(SCALE_KERNEL, 4, dict(FACTOR=3, num_warps=4)) == (3, 64)
    assert launch_module._constexpr_tail(SCALE_KERNEL, 4, dict(FACTOR=2, BLOCK=32)) == (2, 32)


def test_constexpr_tail_rejects_a_runtime_parameter_after_the_arguments():
    with pytest.raises(TypeError, match="parameter 'n' is not a tl.constexpr"):
        launch_module._constexpr_tail(RUNTIME_LAST_KERNEL, 1, dict(BLOCK=16))


# name: (n, stride, offset of the source in elements, dtype, meta)
GPU_CASES = {
    'unit_stride_fp32': (1000, 1, 0, torch.float32, dict(FACTOR=2)),
    'stride2_fp16': (777, 2, 0, torch.float16, dict(FACTOR=3, BLOCK=128)),
    'unaligned_bf16': (100, 1, 1, torch.bfloat16, dict(FACTOR=2)),
    'one_element': (1, 1, 3, torch.float32, dict(FACTOR=5, num_warps=1)),
    'multiple_of_16': (512, 16, 0, torch.float16, dict(FACTOR=2)),
}


@pytest.mark.gpu
@pytest.mark.parametrize('name', sorted(GPU_CASES))
def test_cached_launch_matches_torch_on_both_paths(name):
    n, stride, offset, dtype, meta = GPU_CASES[name]
    source = torch.randn(offset + n * stride, device='cuda').to(dtype)[offset:]
    expected = source[::stride] * meta['FACTOR']
    block = meta.get('BLOCK', 64)
    before = len(launch_module._COMPILED)
    for attempt in ('through Triton', 'cached'):
        dst = torch.full((n,), float('nan'), device='cuda', dtype=dtype)
        launch_module.launch(SCALE_KERNEL, (triton.cdiv(n, block),), (source, dst, n, stride),
                             meta)
        torch.testing.assert_close(dst, expected, rtol=0, atol=0, msg=f'{name}: {attempt}')
    assert len(launch_module._COMPILED) == before + 1


@pytest.mark.gpu
def test_cached_launch_rejects_tensors_on_two_devices():
    # The cached path hands the launcher addresses, which Triton cannot check: launch must.
    source = torch.randn(64, device='cuda')
    with pytest.raises(ValueError, match='got tensors on cuda:0 and cpu'):
        launch_module.launch(SCALE_KERNEL, (1,), (source, torch.empty(64), 64, 1),
                             dict(FACTOR=2))


def test_hook_set_reads_triton_hook_chains_and_plain_hooks():
    assert not launch_module._hook_set(None)
    assert not launch_module._hook_set(triton.knobs.runtime.launch_enter_hook)  # none installed
    assert launch_module._hook_set(print)


@pytest.mark.parametrize('n', [1, 2, 3, 15, 16, 17, 196, 3136, 64000])
def test_host_arithmetic_matches_triton(n):
    assert launch_module.next_power_of_2(n) == triton.next_power_of_2(n)
    for d in (1, 3, 16, 64):
        assert launch_module.cdiv(n, d) == triton.cdiv(n, d)
