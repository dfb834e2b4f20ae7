"""The Triton channel-first LayerNorm against the reference (permute + F.layer_norm).

CPU: under Triton's interpreter in a subprocess (see test_triton_ss2d_core.py for why).
GPU (``-m gpu``): the model's channel counts, odd maps, half dtypes, torch.compile.
"""
import json
import os

import pytest
import torch
from triton_interpreter import check_errors, run_interpreted
from triton_interpreter import relative_error as rel

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
TOLERANCE = {'fp32': 1e-5, 'fp16': 2e-3, 'bf16': 1e-2}

# name: (batch, C, H, W, affine, dtype, layout of x and of the output gradient)
# layouts: 'nchw' contiguous, 'cl' channels-last, 'strided' neither (a sliced view).
INTERPRETER_CASES = {
    'odd_channels': (2, 5, 3, 7, True, 'fp32', 'nchw'),
    'padded_channels_many_positions': (1, 130, 5, 9, True, 'fp32', 'nchw'),
    'no_affine': (2, 6, 1, 1, False, 'fp32', 'nchw'),
    'bf16': (2, 12, 4, 5, True, 'bf16', 'nchw'),
    'channels_last_odd': (2, 5, 3, 7, True, 'fp32', 'cl'),
    'channels_last_bf16_padded': (2, 40, 3, 5, True, 'bf16', 'cl'),
    'strided_view': (2, 6, 4, 5, True, 'fp32', 'strided'),
    # BC 512, BP 8: 34 tiles, so the default backward walks 4 per program (the last program's
    # two tiles partly and wholly past the map).
    'backward_walks_tiles': (2, 260, 16, 17, True, 'fp32', 'cl'),
    # BC 1024 with contiguous positions: tiles of 8 positions (not 4), L = 15 in 2 tiles.
    'rows_of_eight_positions': (2, 520, 3, 5, True, 'fp32', 'nchw'),
}
# Cases run with a NORM_TUNING of their own (the Python passes): tiles of 2 positions
# (BC = 8), 3 or 4 tiles per backward program whatever the map's size, the last program's
# tiles partly or wholly past the map (L = 21 in 11 tiles; L = 35 in 18).
WALK_ALWAYS = dict(bwd_blocks_min_tiles=0)
TUNED_CASES = {
    'bwd_blocks_3_remainder': ((2, 5, 3, 7, True, 'fp32', 'nchw'),
                               dict(WALK_ALWAYS, tile_elements=16, bwd_blocks=3)),
    'bwd_blocks_4_channels_last_bf16': ((2, 6, 5, 7, True, 'bf16', 'cl'),
                                        dict(WALK_ALWAYS, tile_elements=16, bwd_blocks=4)),
}
GPU_CASES = {
    'c96': (4, 96, 56, 56, True, 'fp32', 'nchw'),
    'c768_odd': (3, 768, 7, 9, True, 'fp32', 'nchw'),
    'c2048': (2, 2048, 7, 7, True, 'fp32', 'nchw'),
    'c48_bf16': (2, 48, 111, 57, True, 'bf16', 'nchw'),
    'c384_fp16': (2, 384, 14, 15, True, 'fp16', 'nchw'),
    'c96_channels_last_bf16': (4, 96, 56, 56, True, 'bf16', 'cl'),
    'c768_channels_last_odd': (3, 768, 7, 9, True, 'fp32', 'cl'),
}


def in_layout(t, layout):
    """``t (B, C, H, W)`` with the same values in ``layout``."""
    if layout == 'cl':
        return t.contiguous(memory_format=torch.channels_last)
    if layout == 'strided':
        wide = t.new_zeros(*t.shape[:3], 2 * t.shape[3])
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


def relative_errors(case, norm_fn, device='cpu', seed=0):
    """Triton LN2d vs the fp32 reference: relative L2 error of output and gradients."""
    from mmvmamba.ops import reference

    batch, channels, height, width, affine, dtype_name, layout = case
    dtype = DTYPES[dtype_name]
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, channels, height, width, generator=gen) * 2 + 0.5).to(device, dtype)
    weight = (torch.randn(channels, generator=gen) * 0.3 + 1).to(device) if affine else None
    bias = (torch.randn(channels, generator=gen) * 0.3).to(device) if affine else None
    grad = in_layout(torch.randn(batch, channels, height, width, generator=gen).to(device), layout)

    def run(fn, x_in):
        leaves = [x_in.requires_grad_(True)] + [
            t.clone().requires_grad_(True) for t in (weight, bias) if t is not None]
        out = fn(leaves[0], *(leaves[1:] if affine else (None, None)), 1e-5)
        return out, torch.autograd.grad(out, leaves, grad.to(out.dtype))

    ref, ref_grads = run(reference.layer_norm_2d, x.float())
    out, grads = run(norm_fn, in_layout(x.clone(), layout))

    # The output keeps a contiguous or channels-last input's layout.
    layout_ok = out.is_contiguous(
        memory_format=torch.channels_last if layout == 'cl' else torch.contiguous_format)
    errors = {'out': rel(out, ref), 'out_dtype_ok': out.dtype == dtype, 'layout_ok': layout_ok}
    for name, g, g_ref in zip(('x', 'weight', 'bias'), grads, ref_grads):
        errors[name] = rel(g, g_ref)
    return errors


# Interpreter cases the C++ passes also run.
CPP_CASES = ('odd_channels', 'no_affine', 'channels_last_bf16_padded', 'strided_view',
             'backward_walks_tiles', 'rows_of_eight_positions')


def outputs_and_grads(case, norm_fn, seed=3):
    """``norm_fn``'s output and the gradients of x and the affine parameters for one case."""
    batch, channels, height, width, affine, dtype_name, layout = case
    gen = torch.Generator().manual_seed(seed)
    x = in_layout(torch.randn(batch, channels, height, width, generator=gen).to(DTYPES[dtype_name]),
                  layout)
    params = [torch.randn(channels, generator=gen).requires_grad_(True) if affine else None
              for _ in range(2)]
    x.requires_grad_(True)
    out = norm_fn(x, *params, 1e-5)
    grad = in_layout(torch.randn(out.shape, generator=gen).to(out.dtype), layout)
    return [out, *torch.autograd.grad(out, [x, *(p for p in params if p is not None)], grad)]


def _interpreter_worker():
    assert os.environ.get('TRITON_INTERPRET') == '1'
    from mmvmamba.ops.triton.layer_norm_2d import NORM_TUNING, _LayerNorm2d, layer_norm_2d

    results = {name: relative_errors(case, layer_norm_2d, seed=i)
               for i, (name, case) in enumerate(INTERPRETER_CASES.items())}
    default = dict(NORM_TUNING)
    for name, (case, tuning) in TUNED_CASES.items():
        NORM_TUNING.update(tuning)
        results[name] = relative_errors(case, _LayerNorm2d.apply)
        NORM_TUNING.update(default)
    # The C++ passes (mmvmamba._C.layer_norm_2d) against the Python ones, to the bit.
    from mmvmamba.ops.triton import host

    cpp = host.interpreted_cpp_ops()
    cpp_equal = {}
    for name in CPP_CASES:
        runs = [outputs_and_grads(INTERPRETER_CASES[name], fn)
                for fn in (cpp.layer_norm_2d, _LayerNorm2d.apply)]
        cpp_equal[name] = [torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(*runs)]
    print('RESULTS ' + json.dumps(dict(cases=results, cpp_equal=cpp_equal)))  # noqa: T201 (read by the parent test)


def _check(errors, dtype_name):
    check_errors(errors, TOLERANCE[dtype_name], flags=('out_dtype_ok', 'layout_ok'))


@pytest.fixture(scope='module')
def interpreted_results():
    return run_interpreted(__file__, timeout=300)


@pytest.mark.parametrize('name', list(INTERPRETER_CASES))
def test_layer_norm_2d_matches_reference_interpreted(interpreted_results, name):
    _check(interpreted_results['cases'][name], INTERPRETER_CASES[name][5])


@pytest.mark.parametrize('name', list(TUNED_CASES))
def test_tuned_launch_shapes_match_reference_interpreted(interpreted_results, name):
    _check(interpreted_results['cases'][name], TUNED_CASES[name][0][5])


@pytest.mark.parametrize('name', CPP_CASES)
def test_cpp_passes_equal_python_passes_interpreted(interpreted_results, name):
    """The C++ forward and backward give the Python passes' output and gradients to the bit."""
    equal = interpreted_results['cpp_equal'][name]
    assert len(equal) == (4 if INTERPRETER_CASES[name][4] else 2) and all(equal), equal


def test_launch_shape_rule():
    """(BC, BP, tiles per backward program, backward warps): four tiles where BC <= 512 and an
    image has >= 32 tiles, else one; maps with contiguous positions and BC >= 1024 take tiles
    of >= 8 positions and 8 backward warps (the interpreter cases 'backward_walks_tiles' and
    'rows_of_eight_positions' among them)."""
    from mmvmamba.ops.triton.layer_norm_2d import _blocks

    assert _blocks(260, 16 * 17, False) == (512, 8, 4, 4)
    assert _blocks(96, 56 * 56, False) == (128, 32, 4, 4)
    assert _blocks(384, 14 * 14, True) == (512, 8, 1, 4)  # 25 tiles
    assert _blocks(768, 14 * 14, False) == (1024, 4, 1, 4)  # channels past 512
    assert _blocks(768, 14 * 14, True) == (1024, 8, 1, 8)  # rows
    assert _blocks(520, 3 * 5, True) == (1024, 8, 1, 8)
    assert _blocks(5000, 7, True) == (8192, 8, 1, 8)
    assert _blocks(5, 21, False) == (8, 32, 1, 4)


def test_layer_norm_2d_rejects_non_4d():
    from mmvmamba.ops.triton.layer_norm_2d import layer_norm_2d

    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        layer_norm_2d(torch.zeros(2, 3, 4), None, None)


# NORM_TUNING variants the GPU tests run (the Python passes, which read the table).
GPU_TUNINGS = {
    'wide_8_warps': dict(tile_elements=8192, min_positions=16, fwd_warps=8, bwd_warps=8),
    'min_positions_32_16_warps': dict(tile_elements=16384, min_positions=32, fwd_warps=16,
                                      bwd_warps=16),
    'one_tile_per_program': dict(bwd_blocks=1),
    'bwd_blocks_4_everywhere': dict(bwd_blocks=4, bwd_blocks_max_c=1 << 16,
                                    bwd_blocks_min_tiles=0),
    'tile_2048_bwd_blocks_8': dict(tile_elements=2048, bwd_blocks=8),
}


@pytest.fixture(params=['default', *GPU_TUNINGS])
def norm_tuning(request):
    """The default launch shape (C++ passes where built), or a ``NORM_TUNING`` variant through
    the Python passes."""
    from mmvmamba.ops.triton.host import CPP_PASSES
    from mmvmamba.ops.triton.layer_norm_2d import NORM_TUNING

    saved, saved_cpp = dict(NORM_TUNING), dict(CPP_PASSES)
    if request.param != 'default':
        NORM_TUNING.update(GPU_TUNINGS[request.param])
        CPP_PASSES['layer_norm_2d'] = False
    yield request.param
    NORM_TUNING.update(saved)
    CPP_PASSES.update(saved_cpp)


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_layer_norm_2d_matches_reference_gpu(name, norm_tuning):
    from mmvmamba.ops.triton.layer_norm_2d import layer_norm_2d

    _check(relative_errors(GPU_CASES[name], layer_norm_2d, device='cuda'), GPU_CASES[name][5])


@pytest.mark.gpu
def test_layer_norm_2d_compiles_fullgraph():
    from mmvmamba import ops

    x = torch.randn(2, 96, 9, 13, device='cuda', requires_grad=True)
    weight = torch.rand(96, device='cuda', requires_grad=True)
    bias = torch.rand(96, device='cuda', requires_grad=True)

    def step(x):
        return (ops.layer_norm_2d(x, weight, bias, backend='triton').relu() * x).sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    grad = x.grad.clone()
    x.grad = None
    expected = step(x)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, x.grad, rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
    _interpreter_worker()
