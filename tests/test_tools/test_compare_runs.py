"""tools/analysis/compare_runs.py on work dirs laid out as mmengine's LocalVisBackend writes them,
including a run continued with --resume (two timestamp folders)."""
from __future__ import annotations

import json

import pytest
from tool_helpers import load_tool


def _launch(work, stamp, records):
    folder = work / stamp / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def _train(it, loss, time=0.2, memory=600):
    return dict(iter=it, step=it, loss=loss, loss_cls=loss / 2, time=time, memory=memory)


def test_resumed_launches_join_and_the_table_reports_them(tmp_path):
    run = tmp_path / 'resumed'
    # first launch: iterations 1-3, cut after the checkpoint at 2; its iteration 3 is redone
    _launch(run, '20260101_000000', [_train(1, 4.0), _train(2, 3.0), dict(step=2, mAP=0.1),
                                     _train(3, 99.0, memory=900)])
    _launch(run, '20260101_010000', [_train(3, 2.0), _train(4, 1.0, time=0.4),
                                     dict(step=4, mAP=0.5)])
    broken = tmp_path / 'broken'
    _launch(broken, '20260101_000000', [_train(1, 4.0), _train(2, float('nan')),
                                        dict(step=2, mAP=0.0)])

    tool = load_tool('analysis/compare_runs.py')
    train, val = tool.read_run(str(run))
    assert [r['loss'] for r in train] == [4.0, 3.0, 2.0, 1.0]
    assert [(r['step'], r['mAP']) for r in val] == [(2, 0.1), (4, 0.5)]

    png = tmp_path / 'curves.png'
    table = tool.main([f'{run}:ours', str(broken), '--metrics', 'mAP', '--skip', '0',
                       '--plot', str(png), '--json', str(tmp_path / 'table.json')])
    ours = table['ours']
    assert ours['iters'] == 4 and ours['metrics'] == {'mAP': 0.5} and ours['last_loss'] == 1.0
    assert ours['s_per_iter'] == pytest.approx(0.2)
    assert ours['peak_memory_mib'] == 600  # over the kept records: the replaced one is gone
    assert ours['all_losses_finite']
    assert not table['broken']['all_losses_finite']
    assert png.stat().st_size > 0
    assert json.loads((tmp_path / 'table.json').read_text())['ours']['iters'] == 4


def test_a_folder_without_scalars_is_a_clear_error(tmp_path):
    tool = load_tool('analysis/compare_runs.py')
    with pytest.raises(FileNotFoundError, match='vis_data/scalars.json'):
        tool.read_run(str(tmp_path))
