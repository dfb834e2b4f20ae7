"""The pure-PyTorch reference ops against the spec, the shared fixture and a loop oracle."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from scan_oracle import loop_scan, make_scan_inputs

from mmvmamba import ops
from mmvmamba.ops import reference

FIXTURE = osp.join(osp.dirname(__file__), '..', 'data', 'official_small', 'fixture_scan.pt')
GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


def test_scan_matches_official_fixture():
    fixture = torch.load(FIXTURE)
    args = fixture['args']
    out = reference.selective_scan(**args, delta_softplus=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fixture['out_softplus_with_D_bias'], rtol=1e-5, atol=1e-5)
    out = reference.selective_scan(args['u'], args['delta'], args['A'], args['B'], args['C'],
                                   None, None, delta_softplus=False)
    torch.testing.assert_close(out, fixture['out_no_softplus_no_D_no_bias'], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('length', [1, 2, 7, 63, 200])
@pytest.mark.parametrize('state', [1, 4, 16])
@pytest.mark.parametrize('groups', [1, 4])
def test_scan_matches_loop(length, state, groups):
    args = make_scan_inputs(2, groups, 3, state, length, seed=length + state)
    expected = loop_scan(**args)
    torch.testing.assert_close(reference.selective_scan(**args).double(), expected,
                               rtol=1e-5, atol=1e-5)


def test_scan_long_sequence_matches_loop():
    args = make_scan_inputs(1, 4, 2, 4, 3137, seed=3)
    expected = loop_scan(**args)
    torch.testing.assert_close(reference.selective_scan(**args).double(), expected,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('softplus,with_d,with_bias', [(True, True, True), (False, False, False)])
def test_scan_options_match_loop(softplus, with_d, with_bias):
    args = make_scan_inputs(2, 4, 2, 2, 33, seed=5)
    args['D'] = args['D'] if with_d else None
    args['delta_bias'] = args['delta_bias'] if with_bias else None
    if not softplus:  # keep dt positive, or the state grows without bound
        args['delta'] = args['delta'].abs()
        args['delta_bias'] = args['delta_bias'].abs() if with_bias else None
    expected = loop_scan(**args, delta_softplus=softplus)
    out = reference.selective_scan(**args, delta_softplus=softplus)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('length', [1, 50])
def test_scan_gradients_match_loop(length):
    args = make_scan_inputs(2, 4, 2, 4, length, seed=11)
    leaves = {k: v.clone().requires_grad_(True) for k, v in args.items()}
    leaves64 = {k: v.double().clone().requires_grad_(True) for k, v in args.items()}
    grad_out = torch.randn(2, 8, length, generator=torch.Generator().manual_seed(1))
    reference.selective_scan(**leaves).backward(grad_out)
    loop_scan(**leaves64).backward(grad_out.double())
    for name in GRAD_NAMES:
        torch.testing.assert_close(leaves[name].grad.double(), leaves64[name].grad,
                                   rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f'd{n}: {m}')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_scan_low_precision_inputs_compute_in_fp32(dtype):
    args = make_scan_inputs(2, 4, 3, 4, 40, dtype=dtype, seed=2)
    out = reference.selective_scan(**args)
    assert out.dtype == torch.float32
    upcast = {k: v.float() for k, v in args.items()}
    torch.testing.assert_close(out, reference.selective_scan(**upcast), rtol=0, atol=0)


def test_scan_rejects_groups_not_dividing_channels():
    args = make_scan_inputs(1, 4, 3, 1, 5)
    args['u'] = args['u'][:, :10]
    args['delta'] = args['delta'][:, :10]
    with pytest.raises(ValueError, match='divisible'):
        reference.selective_scan(**args)


@pytest.mark.parametrize('height,width', [(1, 1), (3, 5), (4, 4), (7, 2)])
def test_cross_scan_directions_follow_spec(height, width):
    x = torch.randn(2, 3, height, width)
    xs = ops.cross_scan(x)
    length = height * width
    assert xs.shape == (2, 4, 3, length)
    for h in range(height):
        for w in range(width):
            p, q = h * width + w, w * height + h
            torch.testing.assert_close(xs[:, 0, :, p], x[:, :, h, w], rtol=0, atol=0)
            torch.testing.assert_close(xs[:, 1, :, q], x[:, :, h, w], rtol=0, atol=0)
            torch.testing.assert_close(xs[:, 2, :, length - 1 - p], x[:, :, h, w], rtol=0, atol=0)
            torch.testing.assert_close(xs[:, 3, :, length - 1 - q], x[:, :, h, w], rtol=0, atol=0)


@pytest.mark.parametrize('height,width', [(1, 1), (3, 5), (6, 4)])
def test_cross_merge_follows_spec(height, width):
    length = height * width
    y = torch.randn(2, 4, 3, length)
    out = ops.cross_merge(y, height, width)
    assert out.shape == (2, 3, height, width)
    for h in range(height):
        for w in range(width):
            p, q = h * width + w, w * height + h
            expected = (y[:, 0, :, p] + y[:, 2, :, length - 1 - p] + y[:, 1, :, q]
                        + y[:, 3, :, length - 1 - q])
            torch.testing.assert_close(out[:, :, h, w], expected)
    # Scanning then merging visits every pixel once per direction.
    x = torch.randn(2, 3, height, width)
    torch.testing.assert_close(ops.cross_merge(ops.cross_scan(x), height, width), 4 * x)


def test_cross_merge_rejects_wrong_shape():
    with pytest.raises(ValueError, match='H\\*W'):
        ops.cross_merge(torch.randn(1, 4, 2, 10), 3, 3)


def test_layer_norm_2d_normalises_over_channels():
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    weight, bias = torch.randn(5), torch.randn(5)
    out = ops.layer_norm_2d(x, weight, bias, eps=1e-5)
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight[:, None, None] + bias[:, None, None]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _core_params(inner=6, rank=2, state=1, directions=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x_proj_weight=torch.randn(directions, rank + 2 * state, inner, generator=gen) * 0.3,
        dt_projs_weight=torch.randn(directions, inner, rank, generator=gen) * 0.5,
        dt_projs_bias=torch.randn(directions, inner, generator=gen) * 0.5 - 2,
        A_logs=torch.rand(directions * inner, state, generator=gen),
        Ds=torch.randn(directions * inner, generator=gen),
        out_norm_weight=torch.randn(inner, generator=gen),
        out_norm_bias=torch.randn(inner, generator=gen))


def _core_by_einsum(x, p):
    """SS2D steps 3-9 written with einsum and the loop oracle, independent of the reference."""
    batch, inner, height, width = x.shape
    rank, state = p['dt_projs_weight'].shape[2], p['A_logs'].shape[1]
    xs = ops.cross_scan(x)  # (B, 4, Din, L)
    x_dbl = torch.einsum('bkdl,kcd->bkcl', xs, p['x_proj_weight'])
    dt_low, B, C = x_dbl.split([rank, state, state], dim=2)
    delta = torch.einsum('bkrl,kdr->bkdl', dt_low, p['dt_projs_weight'])
    y = loop_scan(xs.flatten(1, 2), delta.flatten(1, 2), -p['A_logs'].exp(), B, C,
                  p['Ds'], p['dt_projs_bias'].flatten(), True).float()
    y = ops.cross_merge(y.view(batch, 4, inner, -1), height, width)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (inner,), p['out_norm_weight'], p['out_norm_bias'])
    return y.permute(0, 3, 1, 2)


@pytest.mark.parametrize('state', [1, 2])
def test_ss2d_core_matches_einsum_composition(state):
    params = _core_params(state=state)
    x = F.silu(torch.randn(2, 6, 5, 7))
    out = ops.ss2d_core(x, **params, backend='reference', scan_backend='reference')
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, _core_by_einsum(x, params), rtol=1e-4, atol=1e-4)


def test_ss2d_core_under_autocast_returns_input_dtype():
    params = _core_params()
    x = F.silu(torch.randn(1, 6, 4, 4)).bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ops.ss2d_core(x, **params, backend='reference', scan_backend='reference')
    assert out.dtype == torch.bfloat16
    expected = _core_by_einsum(x.float(), params)
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1)


def test_ss2d_core_rejects_mismatched_projection():
    params = _core_params()
    params['x_proj_weight'] = params['x_proj_weight'][:, :3]
    with pytest.raises(ValueError, match='dt_rank'):
        ops.ss2d_core(torch.randn(1, 6, 2, 2), **params, backend='reference')
