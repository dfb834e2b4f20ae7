"""``python -m mmvmamba.collect_env`` reports versions and the op's build."""
import subprocess
import sys

from mmvmamba.collect_env import collect_env
from mmvmamba.ops import compiled


def test_collect_env_reports_op_build():
    rows = dict(collect_env())
    assert rows['mmvmamba._C library'] == compiled.library_path()
    assert rows['mmvmamba._C CUDA archs'] == (compiled.built_cuda_archs()
                                              or 'none (CPU-only build)')
    assert 'compiled' in rows['selective_scan backends on cpu']
    for name in ('PyTorch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation'):
        assert rows[name]


def test_collect_env_runs_as_module():
    result = subprocess.run([sys.executable, '-m', 'mmvmamba.collect_env'], capture_output=True,
                            text=True, check=True)
    assert 'selective_scan backends on cpu' in result.stdout
