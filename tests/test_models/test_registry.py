"""``import mmvmamba`` makes VMamba and MM_VSSM buildable from each downstream registry."""
from __future__ import annotations

import importlib

import pytest
import torch
from model_testdata import build_classifier, fixture_meta

import mmvmamba  # noqa: F401  (registers into mmdet / mmseg / mmpretrain)
from mmvmamba.models import MM_VSSM, VMamba


@pytest.mark.parametrize('package', ['mmdet', 'mmseg', 'mmpretrain'])
def test_build_from_each_registry(package, small_arch):
    registry = importlib.import_module(f'{package}.registry').MODELS
    model = registry.build(dict(type='VMamba', arch=small_arch, out_indices=(1, 2)))
    assert type(model) is VMamba and model.out_indices == (1, 2)
    compat = registry.build(dict(type='MM_VSSM', dims=32, depths=(1, 1, 2, 1), ssm_d_state=1))
    assert type(compat) is MM_VSSM


def test_mmpretrain_classifier_param_count_and_forward(small_arch):
    model = build_classifier(dict(
        type='ImageClassifier',
        backbone=dict(type='VMamba', arch=small_arch, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=256)))
    # The reference classifier of the fixture (same 10-class head): fixture_meta.json.
    assert sum(p.numel() for p in model.parameters()) == fixture_meta()['num_params_classifier']
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64), mode='tensor').shape == (2, 10)


def test_backbone_param_count_matches_fixture(small_arch):
    model = VMamba(arch=small_arch)
    assert sum(p.numel() for p in model.parameters()) == fixture_meta()['num_params_backbone']
