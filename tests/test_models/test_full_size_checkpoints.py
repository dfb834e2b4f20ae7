"""Full-size tiny/small/base: reference keys, parameter counts, strict loading of every format.

State dicts are generated from tests/data/official_keys/keys_{arch}.json (the reference's own
key lists and shapes) in each checkpoint layout the backbone recognises. To keep the 88M-value
models cheap, every key holds its own constant (an expanded scalar: no memory), which tells
exactly which checkpoint tensor landed in which parameter; the real-valued layouts are covered
by the golden tests. Each model is built once per arch (module-scoped, parametrised fixture).
"""
from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from model_testdata import build_classifier, reference_keys

from mmvmamba.models import VMamba
from mmvmamba.utils.checkpoint import (
    CheckpointMismatchError,
    extract_reference_state,
    load_reference_state,
    to_backbone_checkpoint,
    to_mmpretrain_checkpoint,
)

# The numbers (also in the key files): backbone with 4 out norms, classifier.
PARAMS = {'tiny': (29_481_408, 30_249_064), 'small': (49_380_096, 50_147_752),
          'base': (87_534_592, 88_557_800)}


class FullSize:
    """One arch: the built backbone and reference-layout state dicts with random values."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self.keys = reference_keys(arch)
        torch.manual_seed(0)
        self.model = VMamba(arch=arch, drop_path_rate=0.0)
        # One constant per key of either reference model (shared keys have the same shapes).
        union = {k: s for k, s in self.keys['Backbone_VSSM'] + self.keys['VSSM']}
        self.values = OrderedDict((k, torch.tensor(float(i + 1)).expand(shape))
                                  for i, (k, shape) in enumerate(union.items()))
        self.backbone = OrderedDict((k, self.values[k]) for k, _ in self.keys['Backbone_VSSM'])
        self.classifier = OrderedDict((k, self.values[k]) for k, _ in self.keys['VSSM'])
        self.formats = _formats(self)


@pytest.fixture(scope='module', params=['tiny', 'small', 'base'])
def full(request) -> FullSize:
    return FullSize(request.param)


def _old_style(state: OrderedDict) -> OrderedDict:
    """Rename to the older reference names and store 1x1 weights as 4-D (out, in, 1, 1)."""
    out = OrderedDict()
    for key, value in state.items():
        key = re.sub(r'^(layers\.\d+\.blocks\.\d+\.)norm\.', r'\1ln_1.', key)
        key = key.replace('.op.', '.self_attention.', 1)
        key = key.replace('patch_embed.0.', 'patch_embed.proj.')
        key = key.replace('patch_embed.2.', 'patch_embed.norm.')
        key = key.replace('classifier.norm.', 'norm.').replace('classifier.head.', 'head.')
        if value.dim() == 2 and any(p in key for p in ('in_proj', 'out_proj', 'fc1', 'fc2')):
            value = value[:, :, None, None]
        out[key] = value
    return out


def _formats(full: FullSize) -> dict:
    """Every checkpoint layout, each as ``torch.load`` would return it."""
    ema = OrderedDict((k, v + 0.5) for k, v in full.classifier.items())
    detector = OrderedDict((f'backbone.{k}', v) for k, v in full.backbone.items())
    detector['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 96, 1, 1)
    detector['rpn_head.rpn_conv.weight'] = torch.zeros(256, 256, 3, 3)
    segmentor = OrderedDict((f'backbone.{k}', v) for k, v in full.backbone.items())
    segmentor['decode_head.conv_seg.weight'] = torch.zeros(150, 512, 1, 1)
    imagenet_ref = extract_reference_state({'model': full.classifier})
    return {
        'imagenet': ({'model': full.classifier, 'model_ema': ema, 'epoch': 300}, {}, True),
        'imagenet_ema': ({'model': full.classifier, 'model_ema': ema}, dict(use_ema=True), True),
        'imagenet_old_names': ({'model': _old_style(full.classifier)}, {}, True),
        'mmdet': ({'state_dict': detector, 'meta': {'epoch': 12}}, {}, False),
        'mmseg': ({'state_dict': segmentor, 'meta': {'iter': 160000}}, {}, False),
        'bare_backbone': (full.backbone, {}, False),
        'bare_classifier': (full.classifier, {}, True),
        'prefix': ({'state_dict': detector}, dict(prefix='backbone.'), False),
        'converted_from_imagenet': (to_backbone_checkpoint(imagenet_ref), {}, True),
        'converted_from_mmdet': (
            to_backbone_checkpoint(extract_reference_state({'state_dict': detector})), {}, False),
        'mmpretrain': (to_mmpretrain_checkpoint(imagenet_ref), {}, True),
    }


def _constant(value: torch.Tensor) -> float:
    """The value every element of ``value`` holds (checked at both ends and in the middle)."""
    flat = value.reshape(-1)
    first = flat[0].item()
    assert flat[-1].item() == first and flat[flat.numel() // 2].item() == first
    return first


def test_keys_shapes_and_params_match_reference(full):
    state = full.model.state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [
        (k, list(s)) for k, s in full.keys['Backbone_VSSM']]
    num = sum(p.numel() for p in full.model.parameters())
    assert num == full.keys['Backbone_VSSM_num_params'] == PARAMS[full.arch][0]


@pytest.mark.parametrize('fmt', [
    'imagenet', 'imagenet_ema', 'imagenet_old_names', 'mmdet', 'mmseg', 'bare_backbone',
    'bare_classifier', 'prefix', 'converted_from_imagenet', 'converted_from_mmdet', 'mmpretrain'])
def test_strict_load_every_format(full, fmt):
    checkpoint, kwargs, from_classifier = full.formats[fmt]
    model = full.model
    with torch.no_grad():  # mark the out norms, to see whether the load touches them
        for i in model.out_indices:
            getattr(model, f'outnorm{i}').weight.fill_(-7.0)
    load_reference_state(model, extract_reference_state(checkpoint, **kwargs), origin=fmt)
    shift = 0.5 if kwargs.get('use_ema') else 0.0
    for key, value in model.state_dict().items():
        if key.startswith('outnorm') and from_classifier:
            # The format cannot hold them: left as they were.
            assert key.endswith('bias') or _constant(value) == -7.0, key
        else:
            assert _constant(value) == _constant(full.values[key]) + shift, key


def test_other_arch_is_rejected_with_the_keys(full):
    other = {'tiny': 'small', 'small': 'base', 'base': 'tiny'}[full.arch]
    keys = reference_keys(other)['Backbone_VSSM']
    state = OrderedDict((k, torch.zeros(()).expand(s)) for k, s in keys)
    with pytest.raises(CheckpointMismatchError) as info:
        load_reference_state(full.model, extract_reference_state({'state_dict': state}))
    message = str(info.value)
    assert 'shape mismatch' in message or 'missing' in message or 'unexpected' in message
    assert 'layers.' in message


@pytest.mark.parametrize('broken', ['missing', 'unexpected', 'shape', 'partial_outnorms'])
def test_strict_errors_list_the_keys(full, broken):
    if full.arch != 'tiny':
        pytest.skip('one arch is enough for the error paths')
    state = OrderedDict(full.backbone)
    if broken == 'missing':
        del state['layers.2.blocks.5.op.Ds']
        expected = 'layers.2.blocks.5.op.Ds'
    elif broken == 'unexpected':
        state['layers.2.blocks.8.op.Ds'] = torch.zeros(384 * 4)
        expected = 'layers.2.blocks.8.op.Ds'
    elif broken == 'shape':
        state['layers.1.blocks.0.op.A_logs'] = torch.zeros(768, 2)
        expected = 'layers.1.blocks.0.op.A_logs: checkpoint (768, 2) vs model (768, 1)'
    else:  # a classifier checkpoint with some but not all out norms is not a known format
        state = OrderedDict(full.classifier)
        state['outnorm0.weight'] = torch.ones(96)
        state['outnorm0.bias'] = torch.zeros(96)
        expected = 'outnorm1.weight'
    before = full.model.state_dict()['layers.0.blocks.0.op.Ds'].clone()
    with pytest.raises(CheckpointMismatchError, match='does not fit') as info:
        load_reference_state(full.model, extract_reference_state({'state_dict': state}))
    assert expected in str(info.value)
    # Nothing was loaded.
    assert torch.equal(full.model.state_dict()['layers.0.blocks.0.op.Ds'], before)


def test_mmpretrain_classifier_layout(full):
    """The mmpretrain ImageClassifier has the reference classifier's parameter count, and the
    converter's mmpretrain layout of a reference ImageNet state matches its keys and shapes."""
    with torch.device('meta'):  # sizes only: no memory, no init cost
        model = build_classifier(dict(
            type='ImageClassifier',
            backbone=dict(type='VMamba', arch=full.arch, out_indices=(3, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=full.model.dims[-1])))
    num = sum(p.numel() for p in model.parameters())
    assert num == full.keys['VSSM_num_params'] == PARAMS[full.arch][1]
    converted = to_mmpretrain_checkpoint(extract_reference_state({'model': full.classifier}))
    assert {k: tuple(v.shape) for k, v in converted['state_dict'].items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()}
