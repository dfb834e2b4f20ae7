"""tools/analysis/benchmark.py's knob parsing (the benchmark itself needs a GPU)."""
import importlib.util

import pytest
from tool_helpers import REPO

from mmvmamba.ops.triton import host
from mmvmamba.ops.triton.ss2d_core import SCAN_TUNING


@pytest.fixture(scope='module')
def benchmark():
    spec = importlib.util.spec_from_file_location('benchmark_tool',
                                                  REPO / 'tools/analysis/benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scan_tuning_and_cpp_passes_are_set_by_key(benchmark, monkeypatch):
    monkeypatch.setattr(host, 'CPP_PASSES', dict(host.CPP_PASSES))
    saved = dict(SCAN_TUNING)
    try:
        tuning = benchmark.apply_scan_tuning('rank_block=4,stages=1')
        assert tuning['rank_block'] == 4 and tuning['stages'] == 1
        assert SCAN_TUNING['rank_block'] == 4
    finally:
        SCAN_TUNING.clear()
        SCAN_TUNING.update(saved)
    passes = benchmark.apply_cpp_passes('ss2d_core=1,layer_norm_2d=0')
    assert passes == {'ss2d_core': True, 'layer_norm_2d': False} == host.CPP_PASSES


def test_unknown_knobs_are_errors(benchmark):
    with pytest.raises(SystemExit, match="--scan-tuning: unknown key 'rank'"):
        benchmark.apply_scan_tuning('rank=4')
    with pytest.raises(SystemExit, match="--cpp-passes: unknown key 'scan'"):
        benchmark.apply_cpp_passes('scan=1')
