"""The C++ issue of the Triton ops' eager passes (``ops.triton.host``, ``kernels/triton_host``).

CPU: the C++ launcher's block arithmetic against Python's, and the reasons logged when the
passes stay in Python. GPU (``-m gpu``): the C++ LayerNorm2d against the Python passes (same
kernels and arguments, so equal to the bit), its first launch (through Triton) and its cached
ones (``cuLaunchKernel`` by handle), and its device check.
"""
import logging

import pytest
import torch
from mmengine.logging import MMLogger

from mmvmamba.ops import compiled
from mmvmamba.ops.triton import host
from mmvmamba.ops.triton.layer_norm_2d import _blocks, _LayerNorm2d, layer_norm_2d


@pytest.fixture
def fresh_cpp_ops():
    """``host.cpp_ops`` decided anew in the test, and again after it; the log records of it."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    host.cpp_ops.cache_clear()
    yield records
    logger.removeHandler(handler)
    host.cpp_ops.cache_clear()


def test_cpp_blocks_match_python():
    module = compiled.load()
    for channels in (1, 3, 96, 130, 768, 2048, 4096, 8192):
        for length in (1, 7, 49, 196, 3136, 64000):
            for rows in (False, True):
                assert (module.layer_norm_2d_blocks(channels, length, rows)
                        == _blocks(channels, length, rows))


def test_env_keeps_the_python_passes(fresh_cpp_ops, monkeypatch):
    monkeypatch.setenv(host.ENV, '0')
    assert host.cpp_ops() is None
    assert any(f'{host.ENV}=0' in r.getMessage() for r in fresh_cpp_ops)


def test_cpu_only_build_says_so(fresh_cpp_ops, monkeypatch):
    monkeypatch.delenv(host.ENV, raising=False)
    if hasattr(compiled.load(), 'triton_host_set_launcher'):
        pytest.skip('mmvmamba._C was built with CUDA')
    assert host.cpp_ops() is None
    messages = [r.getMessage() for r in fresh_cpp_ops if r.levelno == logging.WARNING]
    assert any('built without CUDA' in m and 'MMVMAMBA_CUDA_ARCH_LIST' in m for m in messages)


# (batch, C, H, W, affine, dtype, layout)
GPU_CASES = {
    'c96_channels_last_bf16': (4, 96, 56, 56, True, torch.bfloat16, 'cl'),
    'odd_fp32': (3, 37, 13, 29, True, torch.float32, 'nchw'),
    'odd_fp16_no_affine': (2, 40, 9, 11, False, torch.float16, 'nchw'),
    'one_pixel_channels_last': (5, 768, 1, 1, True, torch.float32, 'cl'),
    'strided_bf16': (2, 48, 7, 10, True, torch.bfloat16, 'strided'),
}


def _inputs(case, seed):
    batch, channels, height, width, affine, dtype, layout = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=gen) * 2 + 0.5
    grad = torch.randn(batch, channels, height, width, generator=gen)
    if layout == 'cl':
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    elif layout == 'strided':
        x, grad = (t.transpose(2, 3).contiguous().transpose(2, 3)[:, :, :, 1:] for t in (x, grad))
    params = [torch.randn(channels, generator=gen) * 0.3 + 1,
              torch.randn(channels, generator=gen) * 0.3] if affine else [None, None]
    to_cuda = (lambda t: t.to('cuda', dtype)), (lambda t: t.cuda() if t is not None else None)
    return to_cuda[0](x), to_cuda[0](grad), [to_cuda[1](p) for p in params]


def _run(fn, x, grad, params):
    leaves = [x.clone().requires_grad_(True)] + [
        p.clone().requires_grad_(True) for p in params if p is not None]
    weight, bias = (leaves[1:] if params[0] is not None else [None, None])
    out = fn(leaves[0], weight, bias, 1e-5)
    return [out, *torch.autograd.grad(out, leaves, grad)], out.grad_fn.name()


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_cpp_layer_norm_2d_equals_python_passes_gpu(name, fresh_cpp_ops):
    case = GPU_CASES[name]
    x, grad, params = _inputs(case, seed=len(name))
    assert host.cpp_ops() is not None
    expected, _ = _run(_LayerNorm2d.apply, x, grad, params)
    for call in ('first launch, through Triton', 'cached launch'):
        results, node = _run(layer_norm_2d, x, grad, params)
        assert node.startswith('torch::autograd::CppNode<') and 'LayerNorm2d' in node, node
        for got, want in zip(results, expected):
            assert got.dtype == want.dtype and got.stride() == want.stride(), call
            assert torch.equal(got, want), call


@pytest.mark.gpu
def test_cpp_layer_norm_2d_rejects_mixed_devices_gpu():
    x = torch.randn(2, 8, 3, 3, device='cuda')
    with pytest.raises(RuntimeError, match='got tensors on cuda:0 and cpu'):
        layer_norm_2d(x, torch.ones(8), None)
