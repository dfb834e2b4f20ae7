"""The Triton layout copies against torch: the batched transpose (copy and transposed add), and
the fused core's copies between a map and its pair of scan orders.

CPU: under Triton's interpreter in a subprocess (see test_triton_ss2d_core.py for why).
GPU (``-m gpu``): a VMamba-sized map and a tall odd one.
"""
import os

import pytest
import torch
from triton_interpreter import run_interpreted

# name: (planes, rows, cols, dtype of src, dtype of dst)
CASES = {
    'square_bf16_copy': (3, 4, 4, torch.bfloat16, torch.bfloat16),
    'odd_nonsquare_fp32': (2, 5, 37, torch.float32, torch.float32),
    'one_row': (4, 1, 7, torch.float32, torch.float32),
    'one_pixel': (5, 1, 1, torch.float16, torch.float16),
    'multi_tile': (1, 33, 65, torch.float32, torch.float32),
}
GPU_CASES = {
    'stage1': (64, 56, 56, torch.bfloat16, torch.bfloat16),
    'tall_odd': (3, 321, 199, torch.float32, torch.float32),
}
# name: (batch, D, H, W, dtype) for the copies between a map and its pair of scan orders
LAYOUT_CASES = {
    'odd_bf16': (2, 5, 3, 7, torch.bfloat16),
    'multi_tile_fp32': (1, 40, 9, 35, torch.float32),
    'one_row': (3, 6, 1, 5, torch.float32),
    'one_column': (2, 6, 5, 1, torch.float16),
    # Both sides >= SPLIT_ORDERS_MIN_SIDE: channels-last maps take the two plane transposes
    # (several tiles of positions and of channels in the second).
    'split_orders_fp16': (2, 5, 28, 31, torch.float16),
    'split_orders_tall_fp32': (1, 70, 33, 28, torch.float32),
}
GPU_LAYOUT_CASES = {
    'stage1': (8, 96, 56, 56, torch.bfloat16),
    'detection_odd': (2, 96, 201, 319, torch.float32),
}
# Layouts of the (B, D, H, W) map: the backbone's channels-last, contiguous, and a strided view.
LAYOUTS = ('channels_last', 'contiguous', 'strided')
# Padding columns of the pair of maps (row stride S = H*W + pad).
PAD = 5
# The add rounds once to the destination dtype: one ulp of |values| < 8 in half dtypes.
ADD_TOLERANCE = {torch.float32: 1e-6, torch.float16: 2**-8, torch.bfloat16: 2**-5}


def max_errors(cases, device='cpu'):
    """Max abs difference of copy and transposed add from torch, per case."""
    from mmvmamba.ops.triton.transpose import transpose_into

    gen = torch.Generator().manual_seed(0)
    errors = {}
    for name, (planes, rows, cols, src_dtype, dst_dtype) in cases.items():
        src = torch.randn(planes, cols, rows, generator=gen).to(device, src_dtype)
        base = torch.randn(planes, rows, cols, generator=gen).to(device, dst_dtype)
        expected = src.transpose(1, 2).to(dst_dtype)
        src_map = src.view(planes, 1, rows * cols)  # (P, Q, cols*rows) maps
        copied = transpose_into(src_map, torch.full_like(src_map, float('nan'), dtype=dst_dtype),
                                rows, cols)
        added = transpose_into(src_map, base.clone().view(planes, 1, -1), rows, cols,
                               accumulate=True)
        expected_add = (base.float() + src.transpose(1, 2).float()).to(dst_dtype)
        errors[name] = [(copied.view_as(base).float() - expected.float()).abs().max().item(),
                        (added.view_as(base).float() - expected_add.float()).abs().max().item()]
    return errors


def _map_in_layout(x, layout):
    """``x (B, D, H, W)`` channels-last, contiguous, or as a strided view (every other column
    of a wider map)."""
    if layout == 'channels_last':
        return x.contiguous(memory_format=torch.channels_last)
    if layout == 'contiguous':
        return x.contiguous()
    wide = torch.full((*x.shape[:3], 2 * x.shape[3]), float('nan'), device=x.device,
                      dtype=x.dtype)
    wide[..., ::2] = x
    return wide[..., ::2]


def layout_errors(cases, device='cpu'):
    """Per case and layout of the map: max abs differences of ``scan_orders_into`` (both
    orders) and ``merge_orders_into`` from torch, and whether the pair's padding columns were
    left alone and the merged map kept its layout."""
    from mmvmamba.ops.triton.transpose import merge_orders_into, scan_orders_into

    gen = torch.Generator().manual_seed(1)
    errors = {}
    for name, (batch, channels, height, width, dtype) in cases.items():
        length = height * width
        x = torch.randn(batch, channels, height, width, generator=gen).to(device, dtype)
        # The scans' fp32 pair and the x projection's pair in the map's dtype, other strides.
        pair_src = torch.randn(batch, 2, channels, length + PAD, generator=gen).to(device)
        addend = torch.randn(batch, 2, channels, length + 2 * PAD, generator=gen).to(device,
                                                                                    dtype)
        orders = [o for p in (pair_src, addend) for o in (
            p[:, 0, :, :length].float().view_as(x),
            p[:, 1, :, :length].float().view(batch, channels, width, height).transpose(2, 3))]
        expected_merge = (((orders[0] + orders[1]) + orders[2]) + orders[3]).to(dtype)
        for p in (pair_src, addend):
            p[..., length:] = float('nan')  # never read
        for layout in LAYOUTS:
            x_in = _map_in_layout(x, layout)
            pair = torch.full((batch, 2, channels, length + PAD), 7.0, device=device,
                              dtype=dtype)
            scan_orders_into(x_in, pair)
            out = _map_in_layout(torch.full_like(x, float('nan')), layout)
            strides = out.stride()
            merge_orders_into(pair_src, addend, out)
            errors[f'{name}_{layout}'] = [
                (pair[:, 0, :, :length] - x.flatten(2)).abs().max().item(),
                (pair[:, 1, :, :length] - x.transpose(2, 3).flatten(2)).abs().max().item(),
                (out.float() - expected_merge.float()).abs().max().item(),
                bool((pair[..., length:] == 7.0).all()) and out.stride() == strides]
    return errors


def _interpreter_worker():
    import json

    assert os.environ.get('TRITON_INTERPRET') == '1'
    results = dict(transpose=max_errors(CASES), layouts=layout_errors(LAYOUT_CASES))
    print('RESULTS ' + json.dumps(results))  # noqa: T201 (read by the parent test)


@pytest.fixture(scope='module')
def interpreted_results():
    return run_interpreted(__file__, timeout=300)


@pytest.mark.parametrize('name', list(CASES))
def test_transpose_matches_torch_interpreted(interpreted_results, name):
    copy_error, add_error = interpreted_results['transpose'][name]
    assert copy_error == 0.0
    assert add_error <= ADD_TOLERANCE[CASES[name][4]]


@pytest.mark.parametrize('name', list(LAYOUT_CASES))
@pytest.mark.parametrize('layout', LAYOUTS)
def test_scan_order_copies_match_torch_interpreted(interpreted_results, name, layout):
    rows_error, cols_error, merge_error, layouts_ok = interpreted_results['layouts'][
        f'{name}_{layout}']
    assert rows_error == 0.0 and cols_error == 0.0
    assert merge_error <= ADD_TOLERANCE[LAYOUT_CASES[name][4]]  # one rounding to the map's dtype
    assert layouts_ok


def test_split_orders_rule():
    """Which maps :func:`scan_orders_into` writes by two plane transposes: channels-last ones
    (channel stride 1, positions one stride apart) with both sides >= 28, as measured."""
    from mmvmamba.ops.triton.transpose import SPLIT_ORDERS_MIN_SIDE, _split_orders

    def split(shape, layout):
        return _split_orders(_map_in_layout(torch.zeros(shape), layout))

    assert SPLIT_ORDERS_MIN_SIDE == 28
    assert split((2, 5, 28, 31), 'channels_last') and split((1, 70, 33, 28), 'channels_last')
    assert not split((2, 5, 28, 31), 'contiguous') and not split((2, 5, 28, 31), 'strided')
    assert not split((2, 5, 27, 64), 'channels_last') and not split((2, 5, 64, 27),
                                                                    'channels_last')
    # A channel slice of a channels-last map: channels contiguous, positions D' apart.
    assert _split_orders(torch.zeros(1, 28, 28, 8).permute(0, 3, 1, 2)[:, :5])


def test_layout_copies_reject_mismatched_maps():
    from mmvmamba.ops.triton.transpose import (
        merge_orders_into,
        scan_orders_into,
        transpose_into,
    )

    with pytest.raises(ValueError, match='same shape'):
        transpose_into(torch.zeros(2, 3, 12), torch.zeros(2, 4, 12), 4, 3)
    x = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r'scan_orders_into: the pair map must be \(B, 2, D'):
        scan_orders_into(x, torch.zeros(1, 2, 2, 11))  # rows shorter than H*W
    with pytest.raises(ValueError, match='unit stride along positions'):
        merge_orders_into(torch.zeros(1, 2, 12, 2).transpose(2, 3), torch.zeros(1, 2, 2, 12), x)
    with pytest.raises(ValueError, match=r'merge_orders_into: the pair map must be \(B, 2, D'):
        merge_orders_into(torch.zeros(1, 2, 2, 12), torch.zeros(1, 2, 3, 12), x)


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_transpose_matches_torch_gpu(name):
    copy_error, add_error = max_errors({name: GPU_CASES[name]}, device='cuda')[name]
    assert copy_error == 0.0
    assert add_error <= ADD_TOLERANCE[GPU_CASES[name][4]]


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_LAYOUT_CASES))
def test_scan_order_copies_match_torch_gpu(name):
    errors = layout_errors({name: GPU_LAYOUT_CASES[name]}, device='cuda')
    for layout in LAYOUTS:
        rows_error, cols_error, merge_error, layouts_ok = errors[f'{name}_{layout}']
        assert rows_error == 0.0 and cols_error == 0.0 and layouts_ok
        assert merge_error <= ADD_TOLERANCE[GPU_LAYOUT_CASES[name][4]]


if __name__ == '__main__':
    _interpreter_worker()
