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


@pytest.mark.parametrize('name, category', [
    ('ss2d_scan_bwd_kernel', 'scan (fused core)'),
    ('_merge_orders_kernel', 'core layout (scan orders, merge, tiles)'),
    ('layer_norm_2d_fwd_kernel', 'layer norm'),
    ('sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc', 'convolution'),
    ('nvjet_sm90_hsh_192x192_64x3_2x1_v_bz_coopB_NNN', 'gemm'),
    ('sm80_xmma_gemm_f32f32_f32f32_f32_nt_n_tilesize128x32x8', 'gemm'),
    ('triton_poi_fused_add_gelu_3', 'inductor-generated'),
    ('void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda',
     'copy / cast'),
    ('void at::native::reduce_kernel<128, 4, at::native::ReduceOp<float>>', 'reduction'),
    ('void at::native::vectorized_elementwise_kernel<8, at::native::GeluCUDAKernelImpl',
     'elementwise'),
    ('some_unknown_kernel', 'other'),
])
def test_profile_kernel_categories(benchmark, name, category):
    assert benchmark.kernel_category(name) == category


def test_profile_category_table_sums_per_step(benchmark):
    kernels = [('ss2d_scan_fwd_kernel', 3000.0), ('ss2d_scan_bwd_kernel', 7000.0),
               ('nvjet_sm90_x', 5000.0), ('mystery', 5000.0)]
    lines = benchmark.category_table(kernels, steps=5).splitlines()
    assert lines[1].split()[-2:] == ['2.000', '50.0%']  # scans: 10 ms over 5 steps
    assert lines[1].startswith('scan (fused core)')
    assert {line.split()[0] for line in lines[2:4]} == {'gemm', 'other'}
    assert lines[-1].split() == ['total', '4.000']


def test_core_shapes_of_an_arch(benchmark):
    assert benchmark.core_shapes('tiny') == benchmark.CORE_SHAPES
    assert benchmark.core_shapes('tiny', 128) == ((128, 96, 56, 56, 6), (128, 192, 28, 28, 12),
                                                  (128, 384, 14, 14, 24), (128, 768, 7, 7, 48))
    assert benchmark.core_shapes('small', 128)[0] == (128, 192, 56, 56, 6)
    assert benchmark.core_shapes('base') == ((32, 256, 56, 56, 8), (32, 512, 28, 28, 16),
                                             (32, 1024, 14, 14, 32), (32, 2048, 7, 7, 64))
    with pytest.raises(ValueError, match="Unknown VMamba arch 'huge'"):
        benchmark.core_shapes('huge')


def test_norm_shapes_and_tunings(benchmark):
    from mmvmamba.ops.triton.layer_norm_2d import NORM_TUNING

    assert benchmark.norm_shapes('small', 128)[:3] == [
        ('block', 128, 96, 56), ('core_out', 128, 192, 56), ('block', 128, 192, 28)]
    default, wide = benchmark.parse_norm_tunings('default/tile_elements=8192,bwd_warps=8')
    assert default == NORM_TUNING
    assert wide == dict(NORM_TUNING, tile_elements=8192, bwd_warps=8)
    assert NORM_TUNING['tile_elements'] == 4096  # parsing leaves the table alone
    with pytest.raises(SystemExit, match="--norm-tunings: unknown key 'warps'"):
        benchmark.parse_norm_tunings('warps=8')


def test_norm_blocks_follow_the_tuning(monkeypatch):
    import importlib

    layer_norm_2d = importlib.import_module('mmvmamba.ops.triton.layer_norm_2d')

    def blocks(channels, length):  # (BC, BP) of a channels-last map
        return layer_norm_2d._blocks(channels, length, False)[:2]

    assert blocks(768, 49) == (1024, 4)
    assert blocks(96, 5) == (128, 8)  # never more positions than the map's
    monkeypatch.setitem(layer_norm_2d.NORM_TUNING, 'min_positions', 16)
    assert blocks(768, 49) == (1024, 16)
    assert blocks(96, 5) == (128, 8)
    monkeypatch.setitem(layer_norm_2d.NORM_TUNING, 'tile_elements', 65536)
    assert blocks(768, 49) == (1024, 64)
    monkeypatch.setitem(layer_norm_2d.NORM_TUNING, 'bwd_blocks_min_tiles', 0)
    monkeypatch.setitem(layer_norm_2d.NORM_TUNING, 'bwd_blocks_max_c', 4096)
    assert layer_norm_2d._blocks(768, 49, False)[2] == layer_norm_2d.NORM_TUNING['bwd_blocks']
    monkeypatch.setitem(layer_norm_2d.NORM_TUNING, 'rows_bwd_warps', 16)
    assert layer_norm_2d._blocks(768, 49, True)[3] == 16


def test_modes_are_parsed_and_checked(benchmark):
    assert benchmark.parse_modes('train') == ('train', )
    assert benchmark.parse_modes('infer,train') == tuple(benchmark.MODES)
    for bad in ('training', ''):
        with pytest.raises(SystemExit, match='--modes: unknown or none'):
            benchmark.parse_modes(bad)


def test_kernel_list_keeps_full_names_per_step(benchmark):
    long_name = 'void at::native::elementwise_kernel<128, 4, ' + 'x' * 100 + 'MulFunctor>'
    kernels = [('small', 1000.0, 10), (long_name, 9000.0, 15), ('mid', 5000.0, 5)]
    lines = benchmark.kernel_list(kernels, steps=5, limit=2).splitlines()
    assert len(lines) == 3  # header and the two longest
    assert lines[1].split(None, 2) == ['1.800', '3.0', long_name]
    assert lines[2].split() == ['1.000', '1.0', 'mid']


def test_compile_mode_reaches_torch_compile(benchmark):
    """``--compile-mode`` is torch.compile's ``mode`` (an unknown one is torch's error) and
    names the compiled rows' variant; without it, the variant stays ``compiled``."""
    import torch

    with pytest.raises(RuntimeError, match='no-such-mode'):
        benchmark.compile_model(torch.nn.Linear(2, 2), 'vmamba_tiny', 'no-such-mode')
    compiled = benchmark.compile_model(torch.nn.Linear(2, 2), 'vmamba_tiny', 'reduce-overhead')
    assert isinstance(compiled, torch.nn.Module)
    assert benchmark.compiled_variant(None) == 'compiled'
    assert (benchmark.compiled_variant('max-autotune-no-cudagraphs')
            == 'compiled_max-autotune-no-cudagraphs')
