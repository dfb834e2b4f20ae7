"""MM_VSSM: the reference repository's config type builds the same network as VMamba."""
from __future__ import annotations

import logging

import pytest
import torch
from model_testdata import captured_log

from mmvmamba.models import MM_VSSM, VMamba

# The backbone dict of the reference detection configs (small fixture sizes), merged into the
# Swin-T backbone dict of mmdet's mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py as mmengine merges it.
SWIN_LEFTOVERS = dict(embed_dims=96, num_heads=[3, 6, 12, 24], window_size=7, qkv_bias=True,
                      qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, patch_norm=True,
                      with_cp=False, convert_weights=True,
                      init_cfg=dict(type='Pretrained', checkpoint='swin_tiny_patch4.pth'))


def reference_config(**overrides) -> dict:
    cfg = dict(dims=32, depths=(1, 1, 2, 1), ssm_d_state=1, ssm_ratio=2.0, ssm_dt_rank='auto',
               ssm_conv=3, ssm_conv_bias=False, forward_type='v05_noz', mlp_ratio=4.0,
               downsample_version='v3', patchembed_version='v2', norm_layer='ln2d',
               drop_path_rate=0.0, out_indices=(0, 1, 2, 3), pretrained='')
    cfg.update(overrides)
    return cfg


def test_same_network_as_vmamba(small_arch, fixture_state):
    compat = MM_VSSM(**reference_config()).eval()
    plain = VMamba(arch=small_arch, drop_path_rate=0.0).eval()
    assert isinstance(compat, VMamba)
    assert {k: v.shape for k, v in compat.state_dict().items()} == \
        {k: v.shape for k, v in plain.state_dict().items()}
    assert list(compat.state_dict()) == list(fixture_state)
    compat.load_state_dict(fixture_state)
    plain.load_state_dict(fixture_state)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        for a, b in zip(compat(x), plain(x)):
            assert torch.equal(a, b)
    assert compat.init_cfg is None  # pretrained='' loads nothing


def test_swin_leftovers_dropped_with_one_warning():
    with captured_log() as records:
        model = MM_VSSM(**reference_config(), **SWIN_LEFTOVERS)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for name in SWIN_LEFTOVERS:
        if name != 'patch_norm':  # a reference argument too (fixed to True)
            assert name in warnings[0]
    assert model.init_cfg is None  # Swin's init_cfg must not load Swin weights
    assert not model.with_cp


def test_no_warning_for_a_clean_config():
    with captured_log() as records:
        MM_VSSM(**reference_config(use_checkpoint=True))
    assert not [r for r in records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize('name, value', [
    ('forward_type', 'v2'), ('norm_layer', 'LN'), ('downsample_version', 'v2'),
    ('patchembed_version', 'v1'), ('ssm_act_layer', 'gelu'), ('gmlp', True)])
def test_fixed_arguments_are_checked(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        MM_VSSM(**reference_config(**{name: value}))


def test_pretrained_path_loads(tmp_path, fixture_state):
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in fixture_state.items()}}, path)
    model = MM_VSSM(**reference_config(pretrained=str(path)))
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    assert torch.equal(model.state_dict()['layers.2.blocks.1.op.Ds'],
                       fixture_state['layers.2.blocks.1.op.Ds'])
    with pytest.raises(TypeError, match='pretrained'):
        MM_VSSM(**reference_config(pretrained=3))


def test_use_checkpoint_is_with_cp():
    model = MM_VSSM(**reference_config(use_checkpoint=True))
    assert model.with_cp and model.layers[0].blocks[0].with_cp


def test_reference_config_merged_into_mmdet_swin_base(tmp_path, fixture_state):
    """A reference detection config, merged by mmengine into mmdet's Swin-T Mask R-CNN base
    (as the reference ran it), builds through mmdet's registry: Swin's keys are dropped with one
    warning, its Swin init_cfg never loads."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    backbone = reference_config(drop_path_rate=0.2)
    config = tmp_path / 'mask_rcnn_vssm_fpn_coco_small_fixture.py'
    config.write_text(
        "_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']\n"
        f'model = dict(backbone=dict(type="MM_VSSM", **{backbone!r}))\n')
    merged = Config.fromfile(str(config)).model.backbone
    assert 'num_heads' in merged and 'init_cfg' in merged  # the Swin leftovers are really there
    with captured_log() as records:
        model = MODELS.build(merged)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'num_heads' in warnings[0] and 'init_cfg' in warnings[0]
    assert type(model) is MM_VSSM and model.init_cfg is None
    model.init_weights()  # nothing to load: must not try Swin's URL
    assert list(model.state_dict()) == list(fixture_state)
