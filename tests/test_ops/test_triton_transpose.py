"""The Triton batched transpose (copy and transposed add) against ``Tensor.transpose``.

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
        copied = transpose_into(src, torch.full_like(base, float('nan')), rows, cols)
        added = transpose_into(src, base.clone(), rows, cols, accumulate=True)
        expected_add = (base.float() + src.transpose(1, 2).float()).to(dst_dtype)
        errors[name] = [(copied.float() - expected.float()).abs().max().item(),
                        (added.float() - expected_add.float()).abs().max().item()]
    return errors


def _interpreter_worker():
    import json

    assert os.environ.get('TRITON_INTERPRET') == '1'
    print('RESULTS ' + json.dumps(max_errors(CASES)))  # noqa: T201 (read by the parent test)


@pytest.fixture(scope='module')
def interpreted_results():
    return run_interpreted(__file__, timeout=300)


@pytest.mark.parametrize('name', list(CASES))
def test_transpose_matches_torch_interpreted(interpreted_results, name):
    copy_error, add_error = interpreted_results[name]
    assert copy_error == 0.0
    assert add_error <= ADD_TOLERANCE[CASES[name][4]]


def test_transpose_rejects_mismatched_sizes():
    from mmvmamba.ops.triton.transpose import transpose_into

    with pytest.raises(ValueError, match='same number of elements'):
        transpose_into(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), 4, 3)


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_transpose_matches_torch_gpu(name):
    copy_error, add_error = max_errors({name: GPU_CASES[name]}, device='cuda')[name]
    assert copy_error == 0.0
    assert add_error <= ADD_TOLERANCE[GPU_CASES[name][4]]


if __name__ == '__main__':
    _interpreter_worker()
