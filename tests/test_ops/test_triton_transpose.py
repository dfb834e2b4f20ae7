"""The Triton layout copies against torch: the batched transpose (copy and transposed add), and
the channels-last <-> channel-major copies of the fused core.

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
# name: (batch, D, H, W, dtype) for the channels-last <-> channel-major copies
LAYOUT_CASES = {
    'odd_bf16': (2, 5, 3, 7, torch.bfloat16),
    'multi_tile_fp32': (1, 40, 9, 35, torch.float32),
    'one_row': (3, 6, 1, 5, torch.float32),
    'one_column': (2, 6, 5, 1, torch.float16),
}
GPU_LAYOUT_CASES = {
    'stage1': (8, 96, 56, 56, torch.bfloat16),
    'detection_odd': (2, 96, 201, 319, torch.float32),
}
MEMORY_FORMATS = {'channels_last': torch.channels_last, 'contiguous': torch.contiguous_format}
# Each format as is, and the same copies through maps with padded rows.
LAYOUT_VARIANTS = list(MEMORY_FORMATS) + [f'{fmt}_padded' for fmt in MEMORY_FORMATS]
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


def layout_errors(cases, device='cpu'):
    """Per case and layout of ``x`` (channels-last, contiguous): max abs differences of
    ``channel_major``, ``channel_major_transposed`` and ``channels_last_into`` from torch, and
    whether each result has the layout it promises; then the same three copies through maps
    with padded rows (``out=`` views and a strided ``src``), their padding left untouched."""
    from mmvmamba.ops.triton.transpose import (
        channel_major,
        channel_major_transposed,
        channels_last_into,
    )

    gen = torch.Generator().manual_seed(1)
    errors = {}
    for name, (batch, channels, height, width, dtype) in cases.items():
        x = torch.randn(batch, channels, height, width, generator=gen).to(device, dtype)
        src = torch.randn(batch, channels, height * width, generator=gen).to(device)
        for layout, fmt in MEMORY_FORMATS.items():
            x_in = x.contiguous(memory_format=fmt)
            rows, cols = channel_major(x_in), channel_major_transposed(x_in)
            dst = channels_last_into(src, torch.full_like(x_in, float('nan')))
            errors[f'{name}_{layout}'] = [
                (rows - x.flatten(2)).abs().max().item(),
                (cols - x.transpose(2, 3).flatten(2)).abs().max().item(),
                (dst.float() - src.view_as(x).to(dtype).float()).abs().max().item(),
                rows.is_contiguous() and cols.is_contiguous()
                and dst.is_contiguous(memory_format=fmt)]
            length = height * width
            padded = torch.full((2, batch, channels, length + 5), 7.0, device=device, dtype=dtype)
            channel_major(x_in, out=padded[0, ..., :length])
            channel_major_transposed(x_in, out=padded[1, ..., :length])
            src_padded = torch.full((batch, channels, length + 3), float('nan'), device=device)
            src_padded[..., :length] = src
            dst = channels_last_into(src_padded[..., :length], torch.full_like(x_in, float('nan')))
            errors[f'{name}_{layout}_padded'] = [
                (padded[0, ..., :length] - x.flatten(2)).abs().max().item(),
                (padded[1, ..., :length] - x.transpose(2, 3).flatten(2)).abs().max().item(),
                (dst.float() - src.view_as(x).to(dtype).float()).abs().max().item(),
                bool((padded[..., length:] == 7.0).all())]
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
@pytest.mark.parametrize('layout', LAYOUT_VARIANTS)
def test_layout_copies_match_torch_interpreted(interpreted_results, name, layout):
    rows_error, cols_error, into_error, layouts_ok = interpreted_results['layouts'][
        f'{name}_{layout}']
    assert rows_error == 0.0 and cols_error == 0.0
    assert into_error <= ADD_TOLERANCE[LAYOUT_CASES[name][4]]  # one rounding to dst's dtype
    assert layouts_ok


def test_transpose_rejects_mismatched_sizes():
    from mmvmamba.ops.triton.transpose import channel_major, transpose_into

    with pytest.raises(ValueError, match='same shape'):
        transpose_into(torch.zeros(2, 3, 12), torch.zeros(2, 4, 12), 4, 3)
    with pytest.raises(ValueError, match='unit stride along L'):
        channel_major(torch.zeros(1, 2, 3, 4).to(memory_format=torch.channels_last),
                      out=torch.zeros(1, 12, 2).transpose(1, 2))


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_transpose_matches_torch_gpu(name):
    copy_error, add_error = max_errors({name: GPU_CASES[name]}, device='cuda')[name]
    assert copy_error == 0.0
    assert add_error <= ADD_TOLERANCE[GPU_CASES[name][4]]


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_LAYOUT_CASES))
def test_layout_copies_match_torch_gpu(name):
    errors = layout_errors({name: GPU_LAYOUT_CASES[name]}, device='cuda')
    for layout in LAYOUT_VARIANTS:
        rows_error, cols_error, into_error, layouts_ok = errors[f'{name}_{layout}']
        assert rows_error == 0.0 and cols_error == 0.0 and layouts_ok
        assert into_error <= ADD_TOLERANCE[GPU_LAYOUT_CASES[name][4]]


if __name__ == '__main__':
    _interpreter_worker()
