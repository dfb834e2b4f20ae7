"""The backbone on CUDA: every backend trains like the reference one (outputs and gradients)."""
from __future__ import annotations

import pytest
import torch

from mmvmamba.models import VMamba
from mmvmamba.ops import dispatch

pytestmark = pytest.mark.gpu


def _require(op: str, backend: str) -> None:
    ok, reason = dispatch.available_backends(op, 'cuda').get(backend, (False, 'not registered'))
    if not ok:
        pytest.skip(f'{op} backend {backend!r} unavailable on cuda: {reason}')


def _train_step(model: VMamba, x: torch.Tensor, params_of=None) -> tuple[list, dict]:
    """Outputs and parameter gradients of one step of ``model`` (gradients read from
    ``params_of``, e.g. the module a compiled wrapper runs; default: ``model``)."""
    outs = model(x)
    # A loss that weights channels differently, so no gradient is trivially uniform.
    loss = sum((o.float() * torch.linspace(-1, 1, o.shape[1], device=o.device)[:, None, None])
               .square().mean() for o in outs)
    loss.backward()
    return [o.detach().float() for o in outs], {
        n: p.grad.detach().float() for n, p in (params_of or model).named_parameters()}


def _assert_trains_like(outs: list, grads: dict, outs_ref: list, grads_ref: dict) -> None:
    """Outputs within 1e-4 and every parameter gradient within 1e-3 of its largest value."""
    for out, ref in zip(outs, outs_ref):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert grads.keys() == grads_ref.keys()
    for name, ref in grads_ref.items():
        scale = ref.abs().max().item()
        torch.testing.assert_close(grads[name], ref, rtol=1e-3, atol=1e-3 * scale + 1e-7,
                                   msg=lambda m, n=name: f'{n}: {m}')


@pytest.mark.parametrize('core_backend, scan_backend', [('reference', 'compiled'),
                                                        ('fused', None)])
def test_backends_train_like_reference(small_arch, fixture_state, no_tf32, core_backend,
                                       scan_backend):
    _require('ss2d_core', core_backend)
    if scan_backend is not None:
        _require('selective_scan', scan_backend)
    x = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(0)).cuda()
    results = []
    for core, scan in (('reference', 'reference'), (core_backend, scan_backend)):
        model = VMamba(arch=small_arch, drop_path_rate=0.0, core_backend=core,
                       scan_backend=scan).cuda().train()
        model.load_state_dict(fixture_state)
        results.append(_train_step(model, x))
    _assert_trains_like(*results[1], *results[0])


def test_bf16_autocast_with_cp_training_step(small_arch, fixture_state):
    """The default (auto) backends under bf16 autocast with checkpointing: finite, and close
    to the fp32 forward."""
    model = VMamba(arch=small_arch, drop_path_rate=0.1, with_cp=True).cuda().train()
    model.load_state_dict(fixture_state)
    x = torch.randn(2, 3, 96, 128, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        outs, grads = _train_step(model, x)
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads['layers.0.blocks.0.op.A_logs'].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            low = model(x)
        full = model(x)
    for a, b in zip(low, full):
        assert (a.float() - b).abs().max() < 0.1  # bf16: 8 mantissa bits on O(1) maps


def test_compiled_training_matches_eager_without_recompiles(small_arch, fixture_state, no_tf32):
    """``torch.compile(fullgraph=True)`` of the backbone on CUDA with the default backends
    (fused core, and in training the Triton norm): one frame for two training steps and an
    inference step under no_grad (a second graph: autograd off), outputs and gradients as the
    eager model's."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    x = torch.randn(2, 3, 72, 88, generator=torch.Generator().manual_seed(0)).cuda()
    eager = VMamba(arch=small_arch, drop_path_rate=0.0).cuda().train()
    eager.load_state_dict(fixture_state)
    model = VMamba(arch=small_arch, drop_path_rate=0.0).cuda().train()
    model.load_state_dict(fixture_state)
    counter = CompileCounterWithBackend('inductor')
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    outs_ref, grads_ref = _train_step(eager, x)
    model.zero_grad(set_to_none=True)
    _train_step(compiled, x, params_of=model)
    model.zero_grad(set_to_none=True)
    outs, grads = _train_step(compiled, x, params_of=model)
    assert counter.frame_count == 1
    _assert_trains_like(outs, grads, outs_ref, grads_ref)
    with torch.no_grad():
        for out, ref in zip(compiled(x), eager(x)):
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert counter.frame_count == 2
