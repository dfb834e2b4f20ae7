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
    cpp_passes = rows["Triton ops' eager CUDA passes"]
    if compiled.built_cuda_archs():
        assert cpp_passes.startswith(('C++ for layer_norm_2d', 'Python (MMVMAMBA_TRITON_HOST=0)'))
    else:
        assert cpp_passes == 'Python (mmvmamba._C was built without CUDA)'
    for name in ('PyTorch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation'):
        assert rows[name]


def test_collect_env_runs_as_module():
    result = subprocess.run([sys.executable, '-m', 'mmvmamba.collect_env'], capture_output=True,
                            text=True, check=True)
    assert 'selective_scan backends on cpu' in result.stdout
