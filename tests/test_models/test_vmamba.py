"""VMamba backbone: shapes, out_indices, freezing, gradient checkpointing, arguments, init."""
from __future__ import annotations

import math

import pytest
import torch

from mmvmamba.models import ARCH_SETTINGS, VMamba
from mmvmamba.models.layers import SS2D, VSSBlock


def _expected_shapes(arch: dict, out_indices, batch: int, h: int, w: int) -> list[tuple]:
    dims = [arch['dims'] * 2**i for i in range(4)] if isinstance(arch['dims'], int) \
        else list(arch['dims'])
    shapes = []
    for i in out_indices:
        stride = 2**(i + 2)
        # each stride-2 layer maps s to ceil(s / 2); ceil(ceil(s/2)/2) == ceil(s/4) etc.
        shapes.append((batch, dims[i], math.ceil(h / stride), math.ceil(w / stride)))
    return shapes


@pytest.mark.parametrize('size', [(64, 64), (33, 33), (112, 137), (100, 150)])
def test_output_shapes(small_arch, size):
    model = VMamba(arch=small_arch, drop_path_rate=0.0).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == _expected_shapes(small_arch, range(4), 2, *size)
    assert all(torch.isfinite(o).all() for o in outs)
    # Plain contiguous NCHW: mmcv's roi_align reads raw NCHW memory and ignores strides.
    assert all(o.is_contiguous() for o in outs)


def test_output_shapes_511(small_arch):
    # The odd square size of mmdet's backbone tests; stage sizes 128, 64, 32, 16.
    model = VMamba(arch=small_arch, out_indices=(2, 3), drop_path_rate=0.0).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 511, 511))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 32, 32), (1, 256, 16, 16)]


@pytest.mark.parametrize('out_indices', [(0, ), (1, 3), (3, ), (-1, ), (0, 1, 2)])
def test_out_indices(small_arch, out_indices):
    model = VMamba(arch=small_arch, out_indices=out_indices).eval()
    normalised = sorted(i % 4 for i in out_indices)
    assert model.out_indices == tuple(normalised)
    norms = sorted(k for k in model.state_dict() if k.startswith('outnorm'))
    assert norms == sorted(f'outnorm{i}.{p}' for i in normalised for p in ('weight', 'bias'))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == _expected_shapes(small_arch, normalised, 1, 64, 96)


def test_out_indices_match_full_run(small_arch, fixture_state):
    """A subset of outputs equals the same stages of the full run (later stages are skipped)."""
    full = VMamba(arch=small_arch).eval()
    full.load_state_dict(fixture_state)
    part = VMamba(arch=small_arch, out_indices=(1, )).eval()
    part.load_state_dict({k: v for k, v in fixture_state.items()
                          if not k.startswith('outnorm') or k.startswith('outnorm1.')})
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(part(x)[0], full(x)[1])


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
def test_frozen_stages(small_arch, frozen_stages):
    model = VMamba(arch=small_arch, frozen_stages=frozen_stages, drop_path_rate=0.1)
    model.train()
    frozen = [] if frozen_stages < 0 else [model.patch_embed]
    frozen += [model.layers[i] for i in range(max(frozen_stages, 0))]
    frozen += [getattr(model, f'outnorm{i}') for i in range(max(frozen_stages, 0))]
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for param in model.parameters():
        if id(param) not in frozen_ids:
            assert param.requires_grad
    for i in range(max(frozen_stages, 0), 4):
        assert model.layers[i].training
    if frozen_stages == 4:
        return
    # Frozen parameters get no gradient; the others do.
    outs = model(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    for module in frozen:
        assert all(p.grad is None for p in module.parameters())
    assert model.layers[3].blocks[0].op.A_logs.grad is not None


def test_with_cp_matches_plain(small_arch):
    """Gradient checkpointing: same outputs and gradients, drop path and its RNG included."""
    torch.manual_seed(0)
    plain = VMamba(arch=small_arch, drop_path_rate=0.3).train()
    with_cp = VMamba(arch=small_arch, drop_path_rate=0.3, with_cp=True).train()
    with_cp.load_state_dict(plain.state_dict())
    assert all(b.with_cp for stage in with_cp.layers for b in stage.blocks)
    x = torch.randn(2, 3, 32, 24)
    results = []
    for model in (plain, with_cp):
        xi = x.clone().requires_grad_()
        torch.manual_seed(123)
        outs = model(xi)
        loss = sum((o * torch.linspace(-1, 1, o.shape[1])[:, None, None]).sum() for o in outs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((outs, xi.grad, grads))
    (outs_a, gx_a, grads_a), (outs_b, gx_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(gx_a, gx_b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6,
                                   msg=lambda m, n=name: f'{n}: {m}')


def test_drop_path_rates(small_arch):
    model = VMamba(arch=small_arch, drop_path_rate=0.4)
    rates = [b.drop_path_rate
             for stage in model.layers for b in stage.blocks]
    expected = torch.linspace(0, 0.4, sum(small_arch['depths'])).tolist()
    assert rates == pytest.approx(expected)
    assert all(isinstance(r, float) for r in rates)


def test_arch_table_and_dt_rank():
    assert set(ARCH_SETTINGS) == {'tiny', 'small', 'base'}
    block = VSSBlock(96, ssm_ratio=1.0)
    assert block.op.dt_rank == 6 and block.op.d_inner == 96
    assert SS2D(100, ssm_ratio=2.0).dt_rank == 7  # ceil(100 / 16), from C, not Din
    assert SS2D(32, dt_rank=5).dt_rank == 5


def test_ssm_initialisation():
    torch.manual_seed(0)
    op = SS2D(64, ssm_ratio=2.0, d_state=1)
    din, r = 128, 4
    assert op.x_proj_weight.shape == (4, r + 2, din)
    assert op.x_proj_weight.abs().max() <= din**-0.5
    assert op.dt_projs_weight.abs().max() <= r**-0.5
    assert torch.equal(op.A_logs, torch.zeros(4 * din, 1))
    assert torch.equal(op.Ds, torch.ones(4 * din))
    dt = torch.nn.functional.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log dt ~ U(log 1e-3, log 1e-1): geometric mean 0.01; 512 samples -> within exp(+-0.3).
    assert 0.0074 < dt.log().mean().exp() < 0.0135
    assert torch.equal(SS2D(16, d_state=3).A_logs[5], torch.tensor([1.0, 2.0, 3.0]).log())
    # Linear-type weights: truncated normal std 0.02, no bias on in/out_proj.
    assert op.in_proj.bias is None and op.out_proj.bias is None
    assert abs(op.in_proj.weight.std().item() - 0.02) < 0.002
    block = VSSBlock(64)
    assert torch.equal(block.mlp.fc1.bias, torch.zeros(256))
    assert torch.equal(block.norm.weight, torch.ones(64))


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), 'Unknown VMamba arch'),
    (dict(arch=dict(dims=32, depths=(1, 1, 1, 1))), 'missing'),
    (dict(arch=['tiny']), 'arch must be a str or a dict'),
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(out_indices=(1, 1)), 'without repeats'),
    (dict(out_indices=()), 'non-empty'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(drop_path_rate=-0.1), 'drop_path_rate'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VMamba(**kwargs)


@pytest.mark.parametrize('change, match', [
    (dict(ssm_conv=4), 'ssm_conv'),
    (dict(ssm_dt_rank=0), 'ssm_dt_rank'),
    (dict(ssm_d_state=0), 'ssm_d_state'),
    (dict(mlp_ratio=0.0), 'mlp_ratio'),
    (dict(dims=(32, 64, 128)), 'dims'),
    (dict(dims=33), 'even'),
    (dict(depths=(1, 0, 1, 1)), 'depths'),
])
def test_bad_arch_fields(small_arch, change, match):
    with pytest.raises(ValueError, match=match):
        VMamba(arch={**small_arch, **change})


def test_autocast_bf16_follows_fp32(small_arch, fixture_state, fixture_inputs, fixture_outputs):
    model = VMamba(arch=small_arch, drop_path_rate=0.0).eval()
    model.load_state_dict(fixture_state)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(fixture_inputs['even'])
    for out, ref in zip(outs, fixture_outputs['backbone']):
        assert torch.isfinite(out).all()
        # bf16 has 8 mantissa bits; the maps are O(1) with maxima ~4.
        assert (out.float() - ref).abs().max() < 0.1


def test_compiles_without_graph_breaks(small_arch):
    """Dynamo captures the whole training forward (drop path and checkpointing included)."""
    torch._dynamo.reset()
    model = VMamba(arch=small_arch, drop_path_rate=0.2, with_cp=True).train()
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    outs = compiled(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    assert model.patch_embed[0].weight.grad is not None
