"""tools/analysis/get_flops.py: the paper's counting conventions, checked against the official
per-operator totals of the tiny classifier and against closed-form counts on small inputs."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from mmengine.config import Config
from tool_helpers import REPO, TOY_DET, TOY_SEG, load_tool, run

# The reference's own count (VSSM.flops()), copied from the project's spec.
OFFICIAL = Path(__file__).parent / 'data' / 'official_flops.json'
SMALL_ARCH = dict(dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1, ssm_dt_rank='auto',
                  ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0)


@pytest.fixture(scope='module')
def flops_tool():
    return load_tool('analysis/get_flops.py')


def _stage_sizes(size: int, stages: int) -> list[int]:
    sizes, s = [], math.ceil(math.ceil(size / 2) / 2)
    for _ in range(stages):
        sizes.append(s)
        s = math.ceil(s / 2)
    return sizes


def expected_scan_flops(dims, depths, ratio, height, width, state=1) -> int:
    """Sum over SS2D blocks of 9 * B * L * Dk * N + B * L * Dk (B = 1, Dk = 4 * Din)."""
    total = 0
    for dim, depth, h, w in zip(dims, depths, _stage_sizes(height, len(dims)),
                                _stage_sizes(width, len(dims))):
        channels = 4 * int(ratio * dim)
        total += depth * (9 * h * w * channels * state + h * w * channels)
    return total


def test_tiny_classifier_equals_the_official_count(flops_tool):
    """Per-operator totals of VMamba-T at 224 equal the reference's own count exactly."""
    official = json.loads(OFFICIAL.read_text())['tiny_fast']['per_op_gflops']
    cfg = Config.fromfile(str(REPO / 'configs/cls_vmamba_t_in1k.py'))
    result = flops_tool.count(cfg, 224, 224)
    ours = result['by_operator']
    assert ours['conv'] == round(official['conv'] * 1e9)
    assert ours['layer_norm'] == round(official['layer_norm'] * 1e9)
    assert ours['selective_scan_fwd'] == round(official['PythonOp.SelectiveScanCuda'] * 1e9)
    assert ours['adaptive_avg_pool2d'] == round(official['adaptive_avg_pool2d'] * 1e9)
    assert ours['linear'] == round(official['linear'] * 1e9)
    assert set(ours) == {'conv', 'layer_norm', 'selective_scan_fwd', 'adaptive_avg_pool2d',
                         'linear'}
    assert result['flops'] == 4905609984
    assert result['params'] == 30249064


@pytest.mark.parametrize('height,width', [(64, 96), (50, 75)])
def test_scan_handle_matches_the_closed_form(flops_tool, height, width):
    cfg = Config.fromfile(str(TOY_SEG))
    result = flops_tool.count(cfg, height, width)
    expected = expected_scan_flops((32, 64, 128, 256), (1, 1, 2, 1), 2.0, height, width)
    assert result['by_operator']['selective_scan_fwd'] == expected
    assert 'aten::gelu' not in result['unsupported'] and 'aten::silu' not in result['unsupported']


def test_detector_counts_tensor_mode_and_cli(tmp_path):
    """The CLI on the toy Mask R-CNN: RPN, RoI and mask heads are traced (conv/linear FLOPs
    beyond the backbone's), the JSON holds what was printed."""
    out = tmp_path / 'flops.json'
    proc = run([sys.executable, str(REPO / 'tools/analysis/get_flops.py'), str(TOY_DET),
                '--shape', '128', '160', '--json', str(out)], cwd=tmp_path)
    result = json.loads(out.read_text())
    assert f'{result["flops"] / 1e9:.2f} G' in proc.stdout
    assert f'{result["params"] / 1e6:.2f} M' in proc.stdout
    scan = expected_scan_flops((32, 64, 128, 256), (1, 1, 2, 1), 2.0, 128, 160)
    assert result['by_operator']['selective_scan_fwd'] == scan
    assert result['by_operator']['linear'] > 0  # the RoI box head's fully connected layers
    assert result['shape'] == [1, 3, 128, 160]


def test_segmentor_flops_exclude_the_auxiliary_head(flops_tool):
    cfg = Config.fromfile(str(TOY_SEG))
    with_aux = flops_tool.count(cfg, 64, 64)
    cfg.model.auxiliary_head = None
    without_aux = flops_tool.count(cfg, 64, 64)
    assert with_aux['flops'] == without_aux['flops']
    assert with_aux['params'] > without_aux['params']
