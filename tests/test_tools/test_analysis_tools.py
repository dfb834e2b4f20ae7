"""tools/analysis/benchmark_train.py and check_ddp_loss.py on CPU, with LossTraceHook.

The speed figures themselves are GPU benchmarks (docs/results.md); here the tools are checked to
run a real Runner on synthetic data and to write what they promise.
"""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
from tool_helpers import FAST_DET, REPO, TOY_DET, load_tool, run, tool_env

CONFIG = '''
_base_ = ['{base}']
custom_hooks = [dict(type='LossTraceHook', out_file='trace.jsonl', max_iters=2)]
'''


def test_benchmark_train_times_a_real_runner_and_traces_losses(tmp_path):
    config = tmp_path / 'toy_trace.py'
    config.write_text(textwrap.dedent(CONFIG.format(base=TOY_DET)))
    work = tmp_path / 'work'
    out = tmp_path / 'speed.json'
    run([sys.executable, str(REPO / 'tools/analysis/benchmark_train.py'), str(config),
         '--data', 'coco', '--image-size', '80', '64', '--num-images', '4', '--batch-size', '2',
         '--warmup', '1', '--iters', '2', '--work-dir', str(work), '--out', str(out),
         '--cfg-options', *FAST_DET], cwd=tmp_path, env=tool_env(threads=2))
    speed = json.loads(out.read_text())
    assert speed['world_size'] == 1 and speed['batch_per_gpu'] == 2 and speed['iters'] == 2
    assert speed['s_per_iter'] > 0
    assert abs(speed['img_per_s'] - 2 / speed['s_per_iter']) < 1e-6
    assert 0 <= speed['data_wait_s_per_iter'] < speed['s_per_iter']
    # The synthetic set is COCO-format at the asked size, and no validation ran.
    spec = json.loads((work / 'synthetic_coco_80x64' / 'toy_data.json').read_text())
    assert (spec['width'], spec['height'], spec['num_train']) == (80, 64, 4)
    trace = [json.loads(line) for line in (work / 'trace.jsonl').read_text().splitlines()]
    assert [t['iter'] for t in trace] == [1, 2]  # max_iters=2 of the 3 iterations
    for t in trace:
        parts = sum(v for k, v in t.items() if k.startswith('loss_'))
        assert abs(t['loss'] - parts) < 1e-4 * t['loss']


def test_check_ddp_loss_compare_flags_a_mismatch():
    tool = load_tool('analysis/check_ddp_loss.py')
    single = [{'iter': i, 'loss': 2.0, 'loss_a': 1.0} for i in (1, 2)]
    close = [{'iter': i, 'loss': 2.02, 'loss_a': 1.0} for i in (1, 2)]
    far = [{'iter': 1, 'loss': 2.0, 'loss_a': 1.0}, {'iter': 2, 'loss': 2.1, 'loss_a': 1.1}]
    rows, ok = tool.compare(close, single, 2, tolerance=0.02)
    assert ok and abs(rows[0]['loss'][2] - 0.01) < 1e-9
    rows, ok = tool.compare(far, single, 2, tolerance=0.02)
    assert not ok and abs(rows[1]['loss_a'][2] - 0.1) < 1e-9


def test_check_ddp_loss_config_is_deterministic(tmp_path):
    from mmengine.config import Config

    tool = load_tool('analysis/check_ddp_loss.py')
    cfg = Config.fromfile(tool.deterministic_config(str(TOY_DET), 5, str(tmp_path / 'c.py'),
                                                    keep_all_samples=True))
    assert cfg.model.backbone.drop_path_rate == 0
    assert all(s.prob == 0 for s in cfg.train_dataloader.dataset.pipeline
               if s.type == 'RandomFlip')
    assert cfg.model.train_cfg.rpn.sampler.num >= 10**6
    assert cfg.model.train_cfg.rcnn.sampler.num >= 10**6
    assert any(h.type == 'LossTraceHook' and h.max_iters == 5 for h in cfg.custom_hooks)


def test_triton_resources_reports_the_norm_kernels():
    """Triton compiles for sm_90 without a GPU; the tool reports each LayerNorm2d kernel's
    registers, spills and barriers (the channels-last block norm: no layout conversion)."""
    import re

    out = run([sys.executable, str(REPO / 'tools/analysis/triton_resources.py'), '--norm',
               'block', '--channels', '96', '--positions', '32', '--warps', '4'],
              cwd=REPO, env=tool_env(threads=2)).stdout
    reports = dict(re.findall(r'^block (fwd|bwd): (.*)$', out, re.M))
    assert set(reports) == {'fwd', 'bwd'}, out
    for report in reports.values():
        registers, stack = map(int, re.match(r'registers (\d+), stack (\d+) B', report).groups())
        assert 0 < registers <= 255 and stack == 0
        assert '0 tile layout conversions' in report and 'scan layout' not in report


def test_triton_resources_types_the_scan_kernels_maps():
    """The half-precision maps the tool types must be parameters of the scan kernels: a renamed
    parameter would compile as fp32 and skew every register count (the tool typed the stale
    names x_ptr, xt_ptr from session 10 on, so xs compiled as fp32)."""
    from mmvmamba.ops.triton.ss2d_scan import ss2d_scan_bwd_kernel, ss2d_scan_fwd_kernel

    tool = load_tool('analysis/triton_resources.py')
    kernels = (ss2d_scan_fwd_kernel, ss2d_scan_bwd_kernel)
    tool.check_pointer_names(kernels, tool.HALF_POINTERS)
    with pytest.raises(ValueError, match=r"no parameter \['x_ptr'\]"):
        tool.check_pointer_names(kernels, ('x_ptr', 'proj_ptr'))
