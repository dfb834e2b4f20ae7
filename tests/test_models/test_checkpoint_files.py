"""Checkpoint files: the converter (idempotence, layouts, pickled files) and init_cfg loading.

Uses the small reference fixture (real reference weights) so every file stays a few MB.
"""
from __future__ import annotations

import argparse
from collections import OrderedDict

import pytest
import torch
from model_testdata import FIXTURES, captured_log, load_converter

from mmvmamba.models import VMamba
from mmvmamba.utils.checkpoint import CheckpointMismatchError
from mmvmamba.utils.safe_load import UnsafeCheckpointError


@pytest.fixture(scope='module')
def converter():
    return load_converter()


@pytest.fixture(scope='module')
def sources(tmp_path_factory, fixture_state) -> dict:
    """The small fixture in each source layout, as files."""
    tmp = tmp_path_factory.mktemp('sources')
    extra = torch.load(FIXTURES / 'fixture_small_cls_extra.pt', weights_only=True)
    classifier = OrderedDict((k, v) for k, v in fixture_state.items()
                             if not k.startswith('outnorm'))
    classifier.update({k: v.float() for k, v in extra.items()})
    ema = OrderedDict((k, v * 0.5) for k, v in classifier.items())
    files = {
        'imagenet': {'model': classifier, 'model_ema': ema},
        'imagenet_4d': {'model': OrderedDict(
            (k, v[:, :, None, None] if k.endswith(('in_proj.weight', 'out_proj.weight',
                                                   'fc1.weight', 'fc2.weight')) else v)
            for k, v in classifier.items())},
        'mmdet': {'state_dict': OrderedDict(
            [(f'backbone.{k}', v) for k, v in fixture_state.items()]
            + [('neck.fpn_convs.0.conv.weight', torch.zeros(8, 8, 3, 3))]),
            'meta': {'epoch': 12}},
        'bare': fixture_state,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = str(tmp / f'{name}.pth')
        torch.save(content, paths[name])
    return paths


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if isinstance(a[key], dict):
            if not _same(a[key], b[key]):
                return False
        elif isinstance(a[key], torch.Tensor):
            if not (a[key].dtype == b[key].dtype and torch.equal(a[key], b[key])):
                return False
        elif a[key] != b[key]:
            return False
    return True


@pytest.mark.parametrize('source', ['imagenet', 'imagenet_4d', 'mmdet', 'bare'])
@pytest.mark.parametrize('to', ['backbone', 'mmpretrain'])
def test_converter_is_idempotent(converter, sources, tmp_path, source, to):
    if to == 'mmpretrain' and source in ('mmdet', 'bare'):
        with pytest.raises(CheckpointMismatchError, match='has no classifier'):
            converter.convert(sources[source], str(tmp_path / 'x.pth'), to=to)
        return
    once, twice = tmp_path / 'once.pth', tmp_path / 'twice.pth'
    first = converter.convert(sources[source], str(once), to=to)
    converter.convert(str(once), str(twice), to=to)
    a = torch.load(once, weights_only=True)
    b = torch.load(twice, weights_only=True)
    assert _same(a, b) and _same(a, first)
    keys = list(a['state_dict'])
    if to == 'backbone':
        assert not any(k.startswith('classifier.') for k in keys)
        has_outnorms = any(k.startswith('outnorm') for k in keys)
        assert has_outnorms == (source in ('mmdet', 'bare'))
    else:
        assert keys[-2:] == ['head.fc.weight', 'head.fc.bias']
        assert 'backbone.outnorm3.weight' in keys
        assert all(k.startswith(('backbone.', 'head.fc.')) for k in keys)


def test_converter_cli_and_ema(converter, sources, tmp_path, capsys):
    out = tmp_path / 'ema.pth'
    converter.main([sources['imagenet'], str(out), '--ema'])
    assert 'backbone layout' in capsys.readouterr().out
    state = torch.load(out, weights_only=True)['state_dict']
    model_state = torch.load(sources['imagenet'], weights_only=True)['model']
    key = 'layers.0.blocks.0.op.in_proj.weight'
    assert torch.equal(state[key], model_state[key] * 0.5)


def test_old_4d_weights_become_2d(converter, sources, tmp_path):
    out = converter.convert(sources['imagenet_4d'], str(tmp_path / 'a.pth'))
    ref = converter.convert(sources['imagenet'], str(tmp_path / 'b.pth'))
    assert _same(out, ref)


def test_pickled_checkpoint_needs_the_explicit_flag(converter, tmp_path, fixture_state,
                                                    small_arch):
    src = tmp_path / 'released.pth'
    torch.save({'model': fixture_state, 'config': argparse.Namespace(lr=1e-3)}, src)
    with pytest.raises(UnsafeCheckpointError, match='unsafe-allow-pickle'):
        converter.convert(str(src), str(tmp_path / 'no.pth'))
    with pytest.raises(UnsafeCheckpointError):
        VMamba(arch=small_arch, init_cfg=dict(type='Pretrained',
                                              checkpoint=str(src))).init_weights()
    dst = tmp_path / 'yes.pth'
    converter.main([str(src), str(dst), '--unsafe-allow-pickle'])
    saved = torch.load(dst, weights_only=True)  # tensors only now
    assert set(saved) == {'state_dict', 'meta'}


@pytest.mark.parametrize('source', ['imagenet', 'imagenet_4d', 'mmdet', 'bare'])
def test_init_cfg_pretrained_loads_every_layout(sources, small_arch, fixture_state, source):
    model = VMamba(arch=small_arch, init_cfg=dict(type='Pretrained', checkpoint=sources[source]))
    with captured_log() as records:
        model.init_weights()
    messages = '\n'.join(r.getMessage() for r in records)
    from_imagenet = source.startswith('imagenet')
    num = len([k for k in fixture_state if not (from_imagenet and k.startswith('outnorm'))])
    assert f'loaded {num} tensors from {sources[source]}' in messages
    # What an ImageNet checkpoint cannot hold is said, never silent.
    assert ('they start fresh' in messages) == from_imagenet
    assert ('dropped the classifier keys' in messages) == from_imagenet
    state = model.state_dict()
    for key, value in fixture_state.items():
        if key.startswith('outnorm') and source.startswith('imagenet'):
            fresh = torch.ones_like(value) if key.endswith('weight') else torch.zeros_like(value)
            assert torch.equal(state[key], fresh), key
        else:
            assert torch.equal(state[key], value), key


def test_init_cfg_errors(sources, small_arch, tmp_path):
    missing = str(tmp_path / 'nowhere' / 'ckpt.pth')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        VMamba(arch=small_arch, init_cfg=dict(type='Pretrained', checkpoint=missing)).init_weights()
    with pytest.raises(ValueError, match='takes checkpoint'):
        VMamba(arch=small_arch, init_cfg=dict(type='Pretrained', checkpoint=sources['bare'],
                                              strict=False)).init_weights()
    with pytest.raises(ValueError, match='single dict'):
        VMamba(arch=small_arch, init_cfg=[dict(type='Pretrained', checkpoint=sources['bare'])]
               ).init_weights()
    with pytest.raises(KeyError, match='use_ema'):
        VMamba(arch=small_arch, init_cfg=dict(type='Pretrained', checkpoint=sources['mmdet'],
                                              use_ema=True)).init_weights()
    ema_only = tmp_path / 'ema_only.pth'
    imagenet = torch.load(sources['imagenet'], weights_only=True)
    torch.save({'model_ema': imagenet['model_ema']}, ema_only)
    with pytest.raises(KeyError, match='only model_ema'):
        VMamba(arch=small_arch, init_cfg=dict(type='Pretrained',
                                              checkpoint=str(ema_only))).init_weights()
    # Another width cannot take the fixture: the mismatches are listed, nothing loads.
    other = VMamba(arch={**small_arch, 'ssm_ratio': 1.0},
                   init_cfg=dict(type='Pretrained', checkpoint=sources['mmdet']))
    before = other.state_dict()['patch_embed.0.weight'].clone()
    with pytest.raises(CheckpointMismatchError, match='shape mismatch') as info:
        other.init_weights()
    assert 'layers.0.blocks.0.op.in_proj.weight: checkpoint (64, 32) vs model (32, 32)' in str(
        info.value)
    assert torch.equal(other.state_dict()['patch_embed.0.weight'], before)


def test_unused_out_norms_are_dropped(sources, small_arch, fixture_state):
    model = VMamba(arch=small_arch, out_indices=(1, 3),
                   init_cfg=dict(type='Pretrained', checkpoint=sources['mmdet']))
    model.init_weights()
    assert torch.equal(model.outnorm1.weight, fixture_state['outnorm1.weight'])
    assert not hasattr(model, 'outnorm0')


# ------------------------------------------------- whole detectors/segmentors (--to model)

def _released_detector(path, with_pickle: bool):
    """A toy Mask R-CNN's weights saved as a released mmdet file would be: 4-D 1x1 backbone
    weights (an older layout), Runner extras, and optionally a pickled config object."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(FIXTURES.parents[2] / 'configs/toy/maskrcnn_vmamba_toy.py'))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    state = OrderedDict(
        (k, v[:, :, None, None] if k.startswith('backbone.') and k.endswith('in_proj.weight')
         else v) for k, v in model.state_dict().items())
    meta = {'epoch': 12, 'dataset_meta': {'classes': ('square', 'disk', 'triangle'),
                                          'palette': [(220, 40, 40), (40, 200, 60), (50, 80, 230)]}}
    if with_pickle:
        meta['cfg'] = argparse.Namespace(lr=1e-4)
    torch.save({'state_dict': state, 'meta': meta, 'optimizer': {'state': {}}}, path)
    return model


def test_whole_detector_converts_to_a_file_test_py_loads(converter, tmp_path):
    from mmvmamba.utils.safe_load import load_runner_checkpoint
    src, dst = tmp_path / 'released_det.pth', tmp_path / 'det.pth'
    model = _released_detector(src, with_pickle=True)
    with pytest.raises(UnsafeCheckpointError):
        load_runner_checkpoint(str(src))  # what tools/test.py would say
    with pytest.raises(UnsafeCheckpointError, match='unsafe-allow-pickle'):
        converter.convert(str(src), str(dst), to='model')
    converter.main([str(src), str(dst), '--to', 'model', '--unsafe-allow-pickle'])
    saved = load_runner_checkpoint(str(dst))
    assert set(saved) == {'state_dict', 'meta'}  # optimizer and pickled config dropped
    assert saved['meta']['dataset_meta']['classes'] == ('square', 'disk', 'triangle')
    model.load_state_dict(saved['state_dict'], strict=True)  # neck and heads included
    for key, value in model.state_dict().items():
        assert torch.equal(saved['state_dict'][key], value), key
    again = tmp_path / 'again.pth'
    converter.convert(str(dst), str(again), to='model')
    assert _same(torch.load(again, weights_only=True), saved)
    # the whole-model file still gives the backbone alone
    backbone = converter.convert(str(dst), str(tmp_path / 'bb.pth'))['state_dict']
    assert set(backbone) == {k[len('backbone.'):] for k in saved['state_dict']
                             if k.startswith('backbone.')}


def test_whole_model_conversion_needs_a_detector_or_segmentor(converter, sources, tmp_path):
    with pytest.raises(CheckpointMismatchError, match='--to backbone or --to mmpretrain'):
        converter.convert(sources['imagenet'], str(tmp_path / 'x.pth'), to='model')
    with pytest.raises(CheckpointMismatchError, match='backbone.'):
        converter.convert(sources['bare'], str(tmp_path / 'x.pth'), to='model')
    with pytest.raises(ValueError, match='--ema'):
        converter.convert(sources['mmdet'], str(tmp_path / 'x.pth'), to='model', ema=True)
