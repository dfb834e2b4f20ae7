"""Parity with the reference implementation on its stored outputs (tests/data/official_small).

The reference weights are converted by mmvmamba's own converter, then loaded the way users load
them: the backbone through ``init_cfg=dict(type='Pretrained')``, the mmpretrain classifier
through mmengine's ``load_checkpoint``.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from mmengine.runner import load_checkpoint
from model_testdata import FIXTURES, build_classifier, load_converter

import mmvmamba  # noqa: F401  (registers VMamba into mmpretrain's MODELS)
from mmvmamba.models import VMamba
from mmvmamba.ops import dispatch

# The fixture expects ~1e-5; the bar is 1e-4 absolute in fp32.
ATOL = 1e-4


@pytest.fixture(scope='module')
def converted(tmp_path_factory, fixture_state) -> dict:
    """The fixture's backbone and classifier checkpoints, converted by the converter tool."""
    convert = load_converter().convert
    tmp = tmp_path_factory.mktemp('golden')
    backbone = tmp / 'backbone.pth'
    convert(str(FIXTURES / 'fixture_small_state.pt'), str(backbone))
    # The classifier in the reference ImageNet layout: backbone minus out norms, plus the head.
    extra = torch.load(FIXTURES / 'fixture_small_cls_extra.pt', weights_only=True)
    raw = torch.load(FIXTURES / 'fixture_small_state.pt', weights_only=True)
    classifier = OrderedDict((k, v) for k, v in raw.items() if not k.startswith('outnorm'))
    classifier.update(extra)
    torch.save({'model': classifier}, tmp / 'imagenet.pth')
    cls_file = tmp / 'mmpretrain.pth'
    convert(str(tmp / 'imagenet.pth'), str(cls_file), to='mmpretrain')
    return {'backbone': str(backbone), 'classifier': str(cls_file)}


def _max_errors(outs, refs) -> list[float]:
    assert len(outs) == len(refs)
    errors = []
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape and out.dtype == torch.float32
        errors.append((out - ref).abs().max().item())
    return errors


def _require(op: str, backend: str, device: str) -> None:
    """Skip, saying why, when ``backend`` of ``op`` cannot run on ``device``."""
    ok, reason = dispatch.available_backends(op, device).get(backend, (False, 'not registered'))
    if not ok:
        pytest.skip(f'{op} backend {backend!r} unavailable on {device}: {reason}')


# (device, ss2d-core backend, scan backend): every path a user can select.
BACKENDS = [
    ('cpu', 'reference', 'reference'),
    ('cpu', 'reference', 'compiled'),
    pytest.param('cuda', 'reference', 'reference', marks=pytest.mark.gpu),
    pytest.param('cuda', 'reference', 'compiled', marks=pytest.mark.gpu),
    pytest.param('cuda', 'fused', None, marks=pytest.mark.gpu),
]


@pytest.mark.parametrize('device, core_backend, scan_backend', BACKENDS)
def test_backbone_matches_reference(converted, small_arch, fixture_inputs, fixture_outputs,
                                    no_tf32, device, core_backend, scan_backend):
    _require('ss2d_core', core_backend, device)
    if scan_backend is not None:
        _require('selective_scan', scan_backend, device)
    model = VMamba(arch=small_arch, drop_path_rate=0.0, scan_backend=scan_backend,
                   core_backend=core_backend,
                   init_cfg=dict(type='Pretrained', checkpoint=converted['backbone']))
    model.init_weights()
    model.eval().to(device)
    for name, key in (('even', 'backbone'), ('odd', 'backbone_odd')):
        with torch.no_grad():
            outs = [o.cpu() for o in model(fixture_inputs[name].to(device))]
        errors = _max_errors(outs, fixture_outputs[key])
        assert max(errors) < ATOL, f'{key}: max abs errors per stage: {errors}'


@pytest.mark.parametrize('name, key', [('even', 'logits'), ('odd', 'logits_odd')])
def test_mmpretrain_classifier_matches_reference(converted, small_arch, fixture_inputs,
                                                 fixture_outputs, name, key):
    model = build_classifier(dict(
        type='ImageClassifier',
        backbone=dict(type='VMamba', arch=small_arch, out_indices=(3, ), drop_path_rate=0.0),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256)))
    load_checkpoint(model, converted['classifier'], map_location='cpu', strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(fixture_inputs[name], mode='tensor')
    errors = _max_errors([logits], [fixture_outputs[key]])
    assert errors[0] < ATOL, f'max abs error of the logits: {errors[0]}'


def test_unconverted_reference_state_loads_directly(small_arch, fixture_state, fixture_inputs,
                                                    fixture_outputs):
    """The module names are the reference's: its state dict loads with plain strict loading."""
    model = VMamba(arch=small_arch, drop_path_rate=0.0).eval()
    model.load_state_dict(fixture_state, strict=True)
    with torch.no_grad():
        outs = model(fixture_inputs['even'])
    assert max(_max_errors(outs, fixture_outputs['backbone'])) < ATOL
