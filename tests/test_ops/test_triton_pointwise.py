"""The Triton bias + GELU and residual-add kernels against the reference (plain torch).

CPU: under Triton's interpreter in a subprocess (see test_triton_ss2d_core.py for why).
GPU (``-m gpu``): the model's shapes, odd maps, half dtypes, torch.compile.
"""
import json
import os

import pytest
import torch
from triton_interpreter import check_errors, run_interpreted
from triton_interpreter import relative_error as rel

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
TOLERANCE = {'fp32': 1e-5, 'fp16': 2e-3, 'bf16': 1e-2}

# name: (batch, C, H, W, dtype, with bias, with scale)
INTERPRETER_CASES = {
    'odd': (2, 5, 3, 7, 'fp32', True, True),
    'one_pixel_many_rows': (3, 70, 1, 1, 'fp32', True, False),
    'long_rows': (1, 3, 17, 31, 'fp32', False, True),
    'bf16': (2, 6, 5, 4, 'bf16', True, True),
}
GPU_CASES = {
    'c384_56': (4, 384, 56, 56, 'fp32', True, True),
    'c96_odd_fp16': (3, 96, 45, 61, 'fp16', True, True),
    'c3072_7_bf16': (2, 3072, 7, 7, 'bf16', True, False),
    'c768_bf16_scale_only': (5, 768, 14, 15, 'bf16', False, True),
}


def relative_errors(case, bias_gelu, residual_add, device='cpu', seed=0):
    """Both Triton ops vs the fp32 reference: relative L2 error of outputs and gradients."""
    from mmvmamba.ops import reference

    batch, channels, height, width, dtype_name, with_bias, with_scale = case
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    x, h = (randn(batch, channels, height, width).to(device, dtype) for _ in range(2))
    bias = (randn(channels) * 0.5).to(device) if with_bias else None
    # Some samples dropped (0), the rest scaled up, as drop path makes them.
    scale = (torch.arange(batch) % 2 * 1.25).to(device) if with_scale else None
    grad = randn(batch, channels, height, width).to(device)

    def run(fn, tensors, *extra):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        out = fn(*leaves, *extra)
        return out, torch.autograd.grad(out, leaves, grad.to(out.dtype))

    errors = {}
    gelu_bias = bias if bias is not None else (randn(channels) * 0.5).to(device)
    ref, ref_grads = run(reference.bias_gelu, (h.float(), gelu_bias))
    out, grads = run(bias_gelu, (h, gelu_bias))
    errors.update(gelu_out=rel(out, ref), gelu_h=rel(grads[0], ref_grads[0]),
                  gelu_bias=rel(grads[1], ref_grads[1]), gelu_dtype_ok=out.dtype == dtype)

    leaves = (x, h) + ((bias, ) if bias is not None else ())

    def with_optional(fn):
        def call(x, h, *maybe_bias):
            return fn(x, h, maybe_bias[0] if maybe_bias else None, scale)
        return call

    ref, ref_grads = run(with_optional(reference.residual_add), [t.float() for t in leaves])
    out, grads = run(with_optional(residual_add), leaves)
    errors.update(add_out=rel(out, ref), add_dtype_ok=out.dtype == dtype,
                  **{f'add_grad_{n}': rel(g, r) for n, g, r in zip(('x', 'h', 'bias'), grads,
                                                                     ref_grads)})
    return errors


def _interpreter_worker():
    assert os.environ.get('TRITON_INTERPRET') == '1'
    from mmvmamba.ops.triton.pointwise import bias_gelu, residual_add

    results = {name: relative_errors(case, bias_gelu, residual_add, seed=i)
               for i, (name, case) in enumerate(INTERPRETER_CASES.items())}
    print('RESULTS ' + json.dumps(results))  # noqa: T201 (read by the parent test)


def _check(errors, dtype_name):
    check_errors(errors, TOLERANCE[dtype_name], flags=('gelu_dtype_ok', 'add_dtype_ok'))


@pytest.fixture(scope='module')
def interpreted_results():
    return run_interpreted(__file__, timeout=300)


@pytest.mark.parametrize('name', list(INTERPRETER_CASES))
def test_pointwise_matches_reference_interpreted(interpreted_results, name):
    _check(interpreted_results[name], INTERPRETER_CASES[name][4])


def test_pointwise_rejects_bad_shapes():
    from mmvmamba.ops.triton.pointwise import bias_gelu, residual_add

    x = torch.zeros(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r'bias \(C,\)'):
        bias_gelu(x, torch.zeros(4))
    with pytest.raises(ValueError, match='one shape'):
        residual_add(x, torch.zeros(2, 3, 5, 4))
    with pytest.raises(ValueError, match=r'bias must be \(3,\)'):
        residual_add(x, x, torch.zeros(2))
    with pytest.raises(ValueError, match=r'scale must be \(2,\)'):
        residual_add(x, x, None, torch.ones(3))


def test_residual_add_without_bias_or_scale_is_the_plain_sum():
    from mmvmamba import ops

    x, h = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    assert torch.equal(ops.residual_add(x, h), x + h)


def test_auto_takes_the_plain_form_when_autograd_records(monkeypatch):
    """'auto' keeps the Triton pass for inference; training and explicit names as documented."""
    from mmvmamba import ops

    monkeypatch.delenv('MMVMAMBA_POINTWISE_BACKEND', raising=False)
    h = torch.zeros(2, 3, 4, 5)
    weight = torch.zeros(3, requires_grad=True)
    assert ops._pointwise_backend('bias_gelu', None, h, weight) == 'reference'
    assert ops._pointwise_backend('bias_gelu', 'triton', h, weight) == 'triton'
    with torch.no_grad():
        assert ops._pointwise_backend('bias_gelu', None, h, weight) is None
    assert ops._pointwise_backend('bias_gelu', None, h, weight.detach()) is None
    monkeypatch.setenv('MMVMAMBA_POINTWISE_BACKEND', 'triton')
    assert ops._pointwise_backend('bias_gelu', None, h, weight) is None  # the env var rules


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_pointwise_matches_reference_gpu(name):
    from mmvmamba.ops.triton.pointwise import bias_gelu, residual_add

    _check(relative_errors(GPU_CASES[name], bias_gelu, residual_add, device='cuda'),
           GPU_CASES[name][4])


@pytest.mark.gpu
def test_pointwise_compiles_fullgraph():
    from mmvmamba import ops

    x = torch.randn(4, 96, 9, 13, device='cuda', requires_grad=True)
    h = torch.randn(4, 96, 9, 13, device='cuda', requires_grad=True)
    bias = torch.rand(96, device='cuda', requires_grad=True)
    scale = torch.tensor([0.0, 1.25, 1.25, 0.0], device='cuda')

    def step(x, h):
        y = ops.residual_add(x, ops.bias_gelu(h, bias, backend='triton'), bias, scale,
                             backend='triton')
        return (y * y).sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x, h)
    grads = torch.autograd.grad(loss, (x, h, bias))
    expected = step(x, h)
    expected_grads = torch.autograd.grad(expected, (x, h, bias))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-3)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


if __name__ == '__main__':
    _interpreter_worker()
