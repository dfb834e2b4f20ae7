"""The full VMamba-T backbone with the compiled scan matches it with the reference scan."""
import copy

import pytest
import torch

from mmvmamba import _C  # noqa: F401  (fail, not skip, when the op is not built)
from mmvmamba.models import VMamba

CUDA = pytest.param('cuda', marks=[
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')])


def _with_scan_backend(model, scan_backend):
    """A copy of ``model`` whose SS2D layers use ``scan_backend``."""
    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if hasattr(m, 'scan_backend')]
    assert layers, 'no SS2D layer exposes scan_backend'
    for layer in layers:
        layer.scan_backend = scan_backend
    return model


@pytest.mark.parametrize('device,size', [
    ('cpu', (48, 64)),
    pytest.param(*CUDA.values, (224, 224), marks=CUDA.marks)])
def test_vmamba_tiny_compiled_scan_matches_reference(device, size, no_tf32):
    torch.manual_seed(0)
    reference = VMamba(arch='tiny', drop_path_rate=0.0, scan_backend='reference',
                       core_backend='reference').to(device).train()
    compiled = _with_scan_backend(reference, 'compiled')
    x = torch.randn(2 if device == 'cuda' else 1, 3, *size, device=device)
    outputs = []
    for model in (reference, compiled):
        inputs = x.clone().requires_grad_(True)
        feats = model(inputs)
        loss = sum((f * torch.linspace(-1, 1, f.numel(), device=device).view_as(f)).sum()
                   for f in feats)
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters()
                 if name.endswith(('A_logs', 'Ds', 'dt_projs_bias', 'x_proj_weight'))}
        outputs.append((feats, inputs.grad, grads))
        with torch.no_grad():
            model.zero_grad()
    (feats, x_grad, grads), (ref_feats, ref_x_grad, ref_grads) = outputs[1], outputs[0]
    for got, want in zip(feats, ref_feats):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    scale = ref_x_grad.abs().max()
    assert (x_grad - ref_x_grad).abs().max() <= 1e-3 * scale
    for name, want in ref_grads.items():
        err = (grads[name] - want).abs().max()
        assert err <= 1e-3 * want.abs().max() + 1e-6, f'{name}: {err}'
