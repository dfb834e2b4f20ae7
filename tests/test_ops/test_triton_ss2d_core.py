"""The fused Triton SS2D core against the pure-PyTorch reference: output and every gradient.

CPU: the kernels run under Triton's interpreter in a subprocess (``TRITON_INTERPRET=1`` must be
set before the kernels are defined, and other test modules import them first), on tiny shapes
that still cover masked channel blocks, several chunks, 1-pixel and 1-row maps, and bf16.
GPU (``-m gpu``): odd, non-square and detection-sized maps in fp32/fp16/bf16, torch.compile,
and the VMamba backbone through the fused core against the reference core.
"""
import json
import os

import pytest
import torch
from triton_interpreter import check_errors, run_interpreted
from triton_interpreter import relative_error as rel

GRAD_NAMES = ('x', 'x_proj_weight', 'dt_projs_weight', 'dt_projs_bias', 'A_logs', 'Ds',
              'out_norm_weight', 'out_norm_bias')
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# Relative L2 error allowed per input dtype (fp32: float rounding; half: one rounding of the
# inputs, the projection and the output).
TOLERANCE = {'fp32': 1e-4, 'fp16': 1e-2, 'bf16': 3e-2}

# name: (batch, Din, H, W, dt rank, dtype, tuning). The interpreter runs with the smallest
# blocks (4 or 16 channels, 16 steps) so that tiny maps still span several channel blocks, chunks
# and segments; both dt-projection paths (unrolled FMAs, tensor-core dot) are covered.
TUNINGS = {
    'fma': dict(block_d=4, block_l=16, num_warps=4, bwd_block_d=8, bwd_num_warps=2,
                min_programs=64, dt_dot=False),
    # The forward and the backward with different channel blocks and warps.
    # (stages: the chunk loops as tl.range(num_stages=2); the interpreter runs them as loops.
    # rank_block=0: every rank row unrolled, no loop over the rank; the other FMA tunings keep
    # the default loop of 8 rows per step.)
    'fma_one_segment': dict(block_d=8, block_l=16, num_warps=2, bwd_block_d=4, bwd_num_warps=4,
                            min_programs=1, dt_dot=False, stages=2, rank_block=0),
    'fma_one_segment_unpaired': dict(block_d=4, block_l=16, num_warps=4, min_programs=1,
                                     dt_dot=False, pair_max_length=0),
    # A split pair: directions 0-1 storing, then 2-3 adding, in two launches.
    'fma_one_segment_split_pair': dict(block_d=4, block_l=16, num_warps=2, bwd_block_d=4,
                                       bwd_num_warps=2, min_programs=1, dt_dot=False,
                                       split_pair_min_rank=1),
    'dot': dict(block_d=16, block_l=16, num_warps=4, bwd_block_d=16, bwd_num_warps=4,
                min_programs=64, dt_dot=True),
    # The dt projection's FMAs two rank rows per step of a loop over the rank.
    'fma_rank_block': dict(block_d=4, block_l=16, num_warps=2, bwd_block_d=4, bwd_num_warps=2,
                           min_programs=64, dt_dot=False, rank_block=2),
    # From dt rank 3 up the forward alone takes the tensor-core dot (FWD_DOT_TILE).
    'fwd_dot_from_rank3': dict(block_d=4, block_l=16, num_warps=2, bwd_block_d=4,
                               bwd_num_warps=2, min_programs=64, dt_dot=False,
                               fwd_dot_min_rank=3),
}
INTERPRETER_CASES = {
    'odd_channels_nonsquare': (2, 5, 3, 4, 2, 'fp32', 'fma'),
    'three_chunks_three_segments': (1, 6, 5, 7, 3, 'fp32', 'fma'),
    'three_chunks_one_segment': (1, 6, 7, 5, 3, 'fp32', 'fma_one_segment'),
    'three_chunks_one_segment_unpaired': (2, 5, 5, 7, 3, 'fp32', 'fma_one_segment_unpaired'),
    'one_pixel': (1, 3, 1, 1, 1, 'fp32', 'fma'),
    # H*W a multiple of 16: the maps need no row padding (xf a view of a contiguous x).
    'unpadded_rows_two_chunks': (2, 5, 4, 8, 2, 'fp32', 'fma'),
    'one_row': (1, 4, 1, 7, 2, 'fp32', 'fma'),
    'bf16_input': (2, 5, 3, 4, 2, 'bf16', 'fma'),
    'dot_two_channel_blocks_segments': (1, 18, 5, 7, 3, 'fp32', 'dot'),
    'dot_bf16_input': (2, 5, 3, 4, 2, 'bf16', 'dot'),
    # x and the output gradient channels-last, as the backbone hands them over.
    'channels_last_segments': (2, 5, 3, 4, 2, 'fp32', 'fma'),
    'channels_last_bf16_paired': (2, 6, 7, 5, 3, 'bf16', 'fma_one_segment'),
    'channels_last_bf16_split_pair': (2, 6, 7, 5, 3, 'bf16', 'fma_one_segment_split_pair'),
    # R = 3 over steps of 2 rows (the last step masked) and R = 4 (two whole steps).
    'rank_loop_remainder': (1, 6, 5, 7, 3, 'fp32', 'fma_rank_block'),
    'rank_loop_whole_steps_bf16': (2, 5, 3, 4, 4, 'bf16', 'fma_rank_block'),
    # The forward's dot, the backward's FMAs; below the rank both FMAs.
    'fwd_dot_two_channel_blocks': (1, 18, 5, 7, 3, 'fp32', 'fwd_dot_from_rank3'),
    'channels_last_fwd_dot_bf16': (2, 6, 7, 5, 4, 'bf16', 'fwd_dot_from_rank3'),
    'fwd_dot_below_its_rank': (2, 5, 3, 4, 2, 'fp32', 'fwd_dot_from_rank3'),
    # Both sides >= 28, channels-last: the scan orders written by two plane transposes.
    'channels_last_split_orders': (1, 4, 28, 29, 2, 'fp32', 'fma'),
    # B*S = 128 columns: the weight gradients summed in two parts (_product_parts).
    'weight_gradient_parts': (2, 4, 8, 8, 2, 'fp32', 'fma'),
}
GPU_CASES = {
    'stage1_like': (2, 96, 56, 56, 6, 'fp32'),
    'stage4_like': (2, 768, 7, 7, 48, 'fp32'),
    'odd_nonsquare': (3, 37, 13, 29, 3, 'fp32'),
    'one_pixel': (3, 37, 1, 1, 3, 'fp32'),
    'one_column': (2, 33, 41, 1, 3, 'fp32'),
    'odd_fp16': (2, 40, 17, 23, 3, 'fp16'),
    'odd_bf16': (2, 40, 17, 23, 3, 'bf16'),
    'detection_bf16': (1, 96, 200, 320, 6, 'bf16'),
    # One segment of three chunks: directions k and k+2 paired in one program on the GPU.
    'paired_three_chunks_bf16': (8, 96, 24, 24, 6, 'bf16'),
    'channels_last_stage1_bf16': (2, 96, 56, 56, 6, 'bf16'),
    'channels_last_odd': (3, 37, 13, 29, 3, 'fp32'),
    # R = 13: under the default tuning one whole step of 8 rank rows and a masked one.
    'rank13_odd_bf16': (2, 200, 9, 11, 13, 'bf16'),
}


def make_core_inputs(batch, inner, height, width, rank, seed=0, device='cpu'):
    """Random fp32 SS2D-core arguments with VMamba-like value ranges."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=gen) * scale + shift).to(device)

    x = torch.nn.functional.silu(randn(batch, inner, height, width))
    params = dict(
        x_proj_weight=randn(4, rank + 2, inner, scale=inner**-0.5),
        dt_projs_weight=randn(4, inner, rank, scale=rank**-0.5),
        dt_projs_bias=randn(4, inner, scale=0.5, shift=-2.0),
        A_logs=randn(4 * inner, 1, scale=0.5),
        Ds=randn(4 * inner, scale=0.5, shift=1.0),
        out_norm_weight=randn(inner, scale=0.2, shift=1.0),
        out_norm_bias=randn(inner, scale=0.2))
    return x, params


def relative_errors(case, fused_fn, device='cpu', seed=0, channels_last=False):
    """Run the fused core and the fp32 reference on one case; relative L2 error per tensor.

    ``channels_last``: hand the fused core ``x`` and the output gradient channels-last; its
    output and input gradient must then be channels-last too (flag ``layout_ok``)."""
    from mmvmamba.ops import reference

    batch, inner, height, width, rank, dtype_name = case
    dtype = DTYPES[dtype_name]
    x, params = make_core_inputs(batch, inner, height, width, rank, seed, device)
    x = x.to(dtype)  # the reference sees the same rounded activation, upcast

    ref_leaves = [x.float().requires_grad_(True)] + [
        p.clone().requires_grad_(True) for p in params.values()]
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # exact fp32 convs
        ref = reference.ss2d_core(ref_leaves[0], *ref_leaves[1:], scan_backend='reference')
        grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed + 1))
        grad = grad.to(device)
        ref_grads = torch.autograd.grad(ref, ref_leaves, grad)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    leaves = [x.contiguous(memory_format=fmt).requires_grad_(True)] + [
        p.clone().requires_grad_(True) for p in params.values()]
    out = fused_fn(leaves[0], *leaves[1:])
    grads = torch.autograd.grad(out, leaves, grad.to(dtype).contiguous(memory_format=fmt))

    errors = {'out': rel(out, ref), 'out_dtype_ok': out.dtype == dtype,
              'out_shape_ok': tuple(out.shape) == (batch, inner, height, width),
              'layout_ok': out.is_contiguous(memory_format=fmt)
              and grads[0].is_contiguous(memory_format=fmt)}
    for name, g, g_ref in zip(GRAD_NAMES, grads, ref_grads):
        errors[name] = rel(g, g_ref)
    return errors


# Interpreter cases the C++ passes (``ss2d_core_cpp``) also run: paired and unpaired scans, one
# and several segments, channels-last bf16, the tensor-core dt projection, the rank loop, the
# scan orders by plane transposes, the weight gradients in parts.
CPP_CASES = ('three_chunks_three_segments', 'three_chunks_one_segment',
             'three_chunks_one_segment_unpaired', 'channels_last_bf16_paired',
             'dot_two_channel_blocks_segments', 'rank_loop_remainder', 'one_pixel',
             'fwd_dot_two_channel_blocks', 'channels_last_split_orders',
             'weight_gradient_parts', 'channels_last_bf16_split_pair')


def outputs_and_grads(case, core_fn, seed, channels_last=False):
    """``core_fn``'s output and gradients of every input for one case's inputs."""
    batch, inner, height, width, rank, dtype_name = case
    x, params = make_core_inputs(batch, inner, height, width, rank, seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to(DTYPES[dtype_name]).contiguous(memory_format=fmt)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1))
    leaves = [x.requires_grad_(True)] + [p.requires_grad_(True) for p in params.values()]
    out = core_fn(*leaves)
    grads = torch.autograd.grad(out, leaves, grad.to(x.dtype).contiguous(memory_format=fmt))
    return [out, *grads]


def _interpreter_worker():
    """Entry point of the subprocess: print the errors of every interpreter case as JSON.
    Uninitialised memory is poisoned (``torch.empty`` filled with NaN under deterministic
    mode), so that a result reading memory no kernel wrote is not finite."""
    assert os.environ.get('TRITON_INTERPRET') == '1'
    torch.use_deterministic_algorithms(True)
    assert torch.utils.deterministic.fill_uninitialized_memory
    from mmvmamba.ops.triton.ss2d_core import (
        SCAN_TUNING,
        _core_fwd,
        _paired,
        scan_config,
        ss2d_core_fused,
    )

    defaults = dict(SCAN_TUNING)

    def use_tuning(tuning: str) -> None:
        """``SCAN_TUNING`` = the defaults updated with ``TUNINGS[tuning]``."""
        SCAN_TUNING.clear()
        SCAN_TUNING.update(defaults, **TUNINGS[tuning])

    results = {}
    for i, (name, case) in enumerate(INTERPRETER_CASES.items()):
        use_tuning(case[-1])
        results[name] = relative_errors(case[:-1], ss2d_core_fused, seed=i,
                                        channels_last=name.startswith('channels_last'))
        length = case[2] * case[3]
        config = scan_config(case[0], case[1], length, case[4])
        results[name]['config'] = dict(config._asdict(), paired=_paired(config, length))
    # The torch.library custom ops (what torch.compile runs) against the reference too: eager
    # calls reach the same forward and backward through an autograd.Function instead.
    use_tuning('fma')
    custom_op = dict(relative_errors(INTERPRETER_CASES['channels_last_segments'][:-1],
                                     lambda *args: _core_fwd(*args, 1e-5)[0], seed=7,
                                     channels_last=True))
    opcheck = _opcheck_custom_ops(*INTERPRETER_CASES['channels_last_segments'][:5])
    # The C++ passes against the Python ones: the same kernels and ATen ops in the same order.
    from mmvmamba.ops.triton import host
    from mmvmamba.ops.triton.ss2d_core import _Core, ss2d_core_cpp

    cpp = host.interpreted_cpp_ops()
    cpp_equal = {}
    for name in CPP_CASES:
        case = INTERPRETER_CASES[name]
        use_tuning(case[-1])
        runs = [outputs_and_grads(case[:-1], fn, seed=11, channels_last=name.startswith('chan'))
                for fn in (lambda *a: ss2d_core_cpp(cpp, *a), lambda *a: _Core.apply(*a, 1e-5))]
        cpp_equal[name] = [torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(*runs)]
    # The custom ops' C++ implementations (forward and backward without autograd): every
    # output, the saved maps included, against the Python passes.
    for name in ('three_chunks_three_segments', 'channels_last_bf16_paired'):
        case = INTERPRETER_CASES[name]
        use_tuning(case[-1])
        cpp_equal[f'{name} (no autograd)'] = _plain_passes_equal(cpp, case[:-1],
                                                                 name.startswith('chan'))
    print('RESULTS ' + json.dumps(dict(cases=results, custom_op=custom_op,  # noqa: T201 (read by the parent test)
                                       cpp_equal=cpp_equal, opcheck=opcheck,
                                       cpp_forward_launches=_cpp_forward_launches(cpp))))


def _cpp_forward_launches(cpp) -> dict:
    """The kernels the C++ forward launches, in order, for a channels-last map with both sides
    >= 28 (the scan orders by two plane transposes) and one below (by the pair kernel): the
    C++ spelling of ``transpose._split_orders``, seen from what it launches."""
    from mmvmamba.ops.triton import host
    from mmvmamba.ops.triton.ss2d_core import _cpp_config

    names = []

    def recording(name, *args):
        names.append(name)
        return host._resolve(name, *args)

    cpp.triton_host_set_resolver(recording)
    launches = {}
    try:
        for height, width in ((28, 29), (27, 40)):
            x, params = make_core_inputs(1, 4, height, width, 2, seed=3)
            x = x.contiguous(memory_format=torch.channels_last)
            p = list(params.values())
            names.clear()
            cpp.ss2d_core_forward(x, *p, 1e-5, *_cpp_config(x, p[0], p[1], p[3]))
            launches[f'{height}x{width}'] = list(names)
    finally:
        cpp.triton_host_set_resolver(host._resolve)
    return launches


def _opcheck_custom_ops(batch, inner, height, width, rank):
    """``torch.library.opcheck`` (schema, and the fake implementations against the real ones:
    shapes, strides, dtypes) of the forward and backward custom ops, on channels-last maps;
    per op 'ok' or the error."""
    from mmvmamba.ops.triton.ss2d_core import _core_bwd, _core_fwd

    x, params = make_core_inputs(batch, inner, height, width, rank, seed=9)
    x = x.contiguous(memory_format=torch.channels_last)
    p = list(params.values())
    outputs = _core_fwd(x, *p, 1e-5)
    grad = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    calls = {'fwd': (_core_fwd, (x, *p, 1e-5)),
             'bwd': (_core_bwd, (grad, outputs[6], *p[:-1], *outputs[1:6]))}
    checked = {}
    for name, (op, args) in calls.items():
        try:
            torch.library.opcheck(op, args, test_utils=('test_schema', 'test_faketensor'))
            checked[name] = 'ok'
        except Exception as err:  # reported to the parent test, which fails on it
            checked[name] = repr(err)[:2000]
    return checked


def _plain_passes_equal(cpp, case, channels_last):
    """``cpp.ss2d_core_forward`` / ``_backward`` against ``_forward`` / ``_backward``: one flag
    per output (7 forward, 5 backward), equal to the bit with the same strides, and a last flag:
    the padding columns of the saved ``xs`` and ``proj`` are zero (the weight-gradient GEMMs sum
    over them). Memory no kernel writes is left out: the padding columns of ``y`` (rows padded
    to 16) and, with one segment, the segment summaries."""
    from mmvmamba.ops.triton.ss2d_core import _backward, _cpp_config, _forward

    batch, inner, height, width, rank, dtype_name = case
    x, params = make_core_inputs(batch, inner, height, width, rank, seed=5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to(DTYPES[dtype_name]).contiguous(memory_format=fmt)
    p = list(params.values())
    config = _cpp_config(x, p[0], p[1], p[3])
    forward = [_forward(x, *p, 1e-5), cpp.ss2d_core_forward(x, *p, 1e-5, *config)]
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(x.dtype)
    # The backward takes the forward's pair of scan orders (its last output) in x's place.
    backward = [fn(grad, saved[6], *p[:-1], *saved[1:6], *extra) for fn, saved, extra in (
        (_backward, forward[0], ()), (cpp.ss2d_core_backward, forward[1], config))]
    segments = config[1][3]

    def written(outputs):
        out, proj, y, stats, states, seg_decay, xs = outputs
        return [out, proj, y[..., :height * width], stats, states,
                seg_decay if segments > 1 else seg_decay.new_zeros(()), xs]

    length = height * width
    padding = [saved[i][..., length:] for saved in forward for i in (1, 6)]
    assert all(p.numel() for p in padding), 'the case needs padded rows'
    return [torch.equal(a, b) and a.stride() == b.stride()
            for a, b in [*zip(*map(written, forward)), *zip(*backward)]] + [
                all(bool((p == 0).all()) for p in padding)]


def _check(errors, dtype_name):
    check_errors(errors, TOLERANCE[dtype_name], flags=('out_dtype_ok', 'out_shape_ok', 'layout_ok'),
                 ignore=('config', ))


@pytest.fixture(scope='module')
def interpreted_results():
    return run_interpreted(__file__, timeout=600)


@pytest.mark.parametrize('name', list(INTERPRETER_CASES))
def test_fused_core_matches_reference_interpreted(interpreted_results, name):
    _check(interpreted_results['cases'][name], INTERPRETER_CASES[name][5])


def test_custom_op_path_matches_reference_interpreted(interpreted_results):
    _check(interpreted_results['custom_op'], 'fp32')


def test_custom_ops_fake_implementations_match_interpreted(interpreted_results):
    """What torch.compile traces with: each custom op's fake implementation gives the real
    one's shapes, strides and dtypes (``torch.library.opcheck``)."""
    assert interpreted_results['opcheck'] == {'fwd': 'ok', 'bwd': 'ok'}


@pytest.mark.parametrize('name', CPP_CASES)
def test_cpp_passes_equal_python_passes_interpreted(interpreted_results, name):
    """The C++ forward and backward (mmvmamba._C.ss2d_core) give the Python passes' output and
    gradients to the bit (with the same strides)."""
    equal = interpreted_results['cpp_equal'][name]
    assert len(equal) == 1 + len(GRAD_NAMES) and all(equal), dict(
        zip(('out', *GRAD_NAMES), equal))


@pytest.mark.parametrize('name', ['three_chunks_three_segments', 'channels_last_bf16_paired'])
def test_cpp_custom_op_passes_equal_python_passes_interpreted(interpreted_results, name):
    """What the torch.compile custom ops run with ``CPP_PASSES['ss2d_core']`` on: the C++
    forward's seven outputs (the saved maps included) and the backward's five, to the bit; the
    saved maps' padding columns zero."""
    equal = interpreted_results['cpp_equal'][f'{name} (no autograd)']
    assert len(equal) == 13 and all(equal), equal


def test_cpp_scan_orders_split_like_python(interpreted_results):
    """The C++ forward writes the scan orders as Python's ``_split_orders`` says: two plane
    transposes (``copy_tiles``) at 28x29 channels-last, the pair kernel at 27x40."""
    from mmvmamba.ops.triton.transpose import _split_orders

    launches = interpreted_results['cpp_forward_launches']
    for shape, split in (('28x29', True), ('27x40', False)):
        height, width = map(int, shape.split('x'))
        x = torch.zeros(1, 4, height, width).contiguous(memory_format=torch.channels_last)
        assert _split_orders(x) == split
        first = launches[shape][:launches[shape].index('ss2d_scan_fwd')]
        assert first == (['copy_tiles', 'copy_tiles'] if split else ['scan_orders']), launches


def test_interpreter_cases_cover_chunks_and_segments(interpreted_results):
    configs = {name: r['config'] for name, r in interpreted_results['cases'].items()}
    assert configs['three_chunks_three_segments']['segments'] == 3
    assert configs['three_chunks_one_segment']['segments'] == 1
    assert configs['three_chunks_one_segment']['chunks'] == 3
    assert configs['three_chunks_one_segment']['paired']  # directions k, k+2 in one program
    assert configs['three_chunks_one_segment']['block_d'] == 8
    assert configs['three_chunks_one_segment']['bwd_block_d'] == 4
    assert not configs['three_chunks_one_segment']['split_pair']
    split = configs['channels_last_bf16_split_pair']
    assert split['paired'] and split['split_pair'] and split['chunks'] > 1
    unpaired = configs['three_chunks_one_segment_unpaired']
    assert unpaired['segments'] == 1 and unpaired['chunks'] > 1 and not unpaired['paired']
    dot = configs['dot_two_channel_blocks_segments']
    assert dot['dt_dot'] and dot['segments'] > 1 and dot['block_d'] == 16
    assert configs['rank_loop_remainder']['rank_block'] == 2
    assert configs['rank_loop_whole_steps_bf16']['rank_block'] == 2
    assert configs['three_chunks_one_segment']['rank_block'] == 0
    assert configs['three_chunks_one_segment']['stages'] == 2
    assert configs['odd_channels_nonsquare']['rank_block'] == 8  # the default
    assert not configs['odd_channels_nonsquare']['dt_dot']  # rank below fwd_dot_min_rank
    for name in ('fwd_dot_two_channel_blocks', 'channels_last_fwd_dot_bf16'):
        fwd_dot = configs[name]
        assert fwd_dot['dt_dot'] and not fwd_dot['bwd_dt_dot']
        assert (fwd_dot['block_d'], fwd_dot['num_warps'], fwd_dot['bwd_block_d']) == (16, 4, 4)
    assert configs['fwd_dot_two_channel_blocks']['segments'] > 1
    below = configs['fwd_dot_below_its_rank']
    assert not below['dt_dot'] and not below['bwd_dt_dot'] and below['block_d'] == 4


def test_slot_order_is_spelled_the_same_everywhere():
    """The kernels' slot of a direction, the slot views and the slot-ordered weights agree with
    ``SLOT_DIRECTION`` (the proj slot order: the row-major directions first)."""
    from mmvmamba.ops.triton.ss2d_core import (
        _direction_order,
        _pair_weights,
        _slot_dt_weights,
        _slot_order,
    )
    from mmvmamba.ops.triton.ss2d_scan import SLOT_DIRECTION, _proj_slot

    assert [_proj_slot.fn(k) for k in range(4)] == [SLOT_DIRECTION.index(k) for k in range(4)]
    order = torch.arange(4)
    assert _slot_order(order).reshape(4).tolist() == list(SLOT_DIRECTION)
    assert _direction_order(_slot_order(order)).tolist() == [0, 1, 2, 3]
    weight = torch.randn(4, 3, 5)  # (4, R+2, D)
    pairs = _pair_weights(weight, torch.float64)  # (2, 2*(R+2), D)
    assert pairs.shape == (2, 6, 5) and pairs.dtype == torch.float64
    assert torch.equal(pairs, weight[list(SLOT_DIRECTION)].double().view(2, 6, 5))
    dt_weight = torch.randn(4, 5, 2)  # (4, D, R)
    slots = _slot_dt_weights(dt_weight, torch.float64)  # (slot, R+2, D)
    assert slots.shape == (4, 4, 5)
    expected = dt_weight[list(SLOT_DIRECTION)].transpose(1, 2).double()
    assert torch.equal(slots[:, :2], expected)
    assert not slots[:, 2:].any()


def test_block_products_sum_over_their_column_parts():
    """``_block_products``: each block's product over all columns, whatever the parts."""
    from mmvmamba.ops.triton.ss2d_core import _block_products, _product_parts

    gen = torch.Generator().manual_seed(0)
    for blocks, rows, cols, columns, parts in ((4, 3, 4, 512, 8), (2, 6, 5, 48, 1)):
        assert _product_parts(blocks, rows, cols, columns) == parts
        a = torch.randn(blocks * rows, columns, generator=gen, dtype=torch.float64)
        b = torch.randn(blocks * cols, columns, generator=gen, dtype=torch.float64)
        expected = torch.einsum('jmc,jnc->jmn', a.view(blocks, rows, -1),
                                b.view(blocks, cols, -1)).float()
        torch.testing.assert_close(_block_products(a, b, blocks), expected)


def test_product_parts_rule():
    """Parts of the weight-gradient sums at VMamba-T's stage shapes (batch 32 / 128, dt
    weight: 4 blocks of R+2 rows; x weight: 2 of 2*(R+2)) and the detection shape: many
    parts where the blocks' partial products are small beside the maps (56x56), few or one
    where they are not (7x7: (4*(R+2)) x (4*D) per part against 64 columns per image)."""
    from mmvmamba.ops.triton.ss2d_core import MAX_PRODUCT_PARTS, _product_parts

    cases = {(32, 3136, 8, 96): 128, (128, 3136, 8, 96): MAX_PRODUCT_PARTS,
             (32, 784, 14, 192): 32, (32, 208, 26, 384): 8, (128, 208, 26, 384): 32,
             (32, 64, 50, 768): 1, (128, 64, 50, 768): 4, (2, 64000, 8, 96): 64}
    for (batch, stride, rows, cols), parts in cases.items():
        assert _product_parts(4, rows, cols, batch * stride) == parts
        assert _product_parts(2, 2 * rows, cols, batch * stride) == parts
    assert _product_parts(4, 8, 96, 32 * 3136 + 16) == 1  # parts must be whole 16s


def test_fused_core_refuses_maps_past_int32_offsets():
    """The kernels index one scan order of all images (``D * B * S``) with int32: a batch that
    would overflow it is refused with the way out, before anything runs (meta tensors)."""
    from mmvmamba.ops.triton.ss2d_core import _check

    inner, side = 768, 56  # S = 3136: D * B * S crosses 2**31 from B = 892
    weights = (torch.empty(4, 3, inner, device='meta'), torch.empty(4, inner, 1, device='meta'),
               torch.empty(4 * inner, 1, device='meta'))
    assert _check(torch.empty(891, inner, side, side, device='meta'), *weights) == 1
    with pytest.raises(ValueError, match=r'Din \* B \* S = 768 \* 892 \* 3136.*smaller'):
        _check(torch.empty(892, inner, side, side, device='meta'), *weights)


def test_fused_core_rejects_state_size_above_one():
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_fused

    x, params = make_core_inputs(1, 4, 2, 2, 1)
    params['A_logs'] = torch.zeros(16, 2)
    params['x_proj_weight'] = torch.zeros(4, 5, 4)
    with pytest.raises(NotImplementedError, match='N = 1'):
        ss2d_core_fused(x, *params.values())


def test_fused_backend_is_cuda_only():
    from mmvmamba.ops import dispatch

    ok, reason = dispatch.available_backends('ss2d_core', 'cpu')['fused']
    assert not ok and 'CUDA' in reason
    with pytest.raises(RuntimeError, match='unavailable on cpu'):
        dispatch.resolve('ss2d_core', 'fused', torch.device('cpu'))


@pytest.fixture(params=['default', 'dot16x64w8', 'unrolled_pipelined', 'fwd_dot_from_rank3'])
def gpu_tuning(request):
    """Run a GPU test with the default scan tuning (the FMA dt projection over the rank 8
    rows at a time; small grids' chunk loops software-pipelined 3 deep), with the tensor-core
    dt projection, with every rank row unrolled and every grid pipelined 2 deep, and with the
    tensor-core dt projection in the forward only (``fwd_dot_min_rank``, every case's rank)."""
    from mmvmamba.ops.triton.ss2d_core import SCAN_TUNING

    saved = dict(SCAN_TUNING)
    if request.param == 'dot16x64w8':
        SCAN_TUNING.update(block_d=16, block_l=64, num_warps=8, bwd_block_d=16,
                           bwd_num_warps=8, dt_dot=True)
    elif request.param == 'unrolled_pipelined':
        SCAN_TUNING.update(rank_block=0, stages=2, pipeline_max_programs=2**31)
    elif request.param == 'fwd_dot_from_rank3':
        SCAN_TUNING.update(fwd_dot_min_rank=3)
    yield request.param
    SCAN_TUNING.clear()
    SCAN_TUNING.update(saved)


@pytest.mark.gpu
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_fused_core_matches_reference_gpu(name, gpu_tuning):
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_fused

    _check(relative_errors(GPU_CASES[name], ss2d_core_fused, device='cuda',
                           channels_last=name.startswith('channels_last')), GPU_CASES[name][-1])


@pytest.mark.gpu
@pytest.mark.parametrize('name', ['stage1_like', 'odd_nonsquare', 'one_pixel', 'detection_bf16',
                                  'paired_three_chunks_bf16', 'channels_last_stage1_bf16',
                                  'rank13_odd_bf16'])
def test_cpp_passes_match_reference_gpu(name, gpu_tuning, monkeypatch):
    """The C++ passes, twice: the first call's launches go through Triton, the second's by
    handle (cuLaunchKernel). Through ``ss2d_core_fused`` with ``CPP_PASSES['ss2d_core']`` on."""
    from mmvmamba.ops.triton import host
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_fused

    monkeypatch.setitem(host.CPP_PASSES, 'ss2d_core', True)
    assert host.cpp_ops() is not None
    nodes = []

    def fused(*args):
        out = ss2d_core_fused(*args)
        nodes.append(out.grad_fn.name())
        return out

    for _ in range(2):
        _check(relative_errors(GPU_CASES[name], fused, device='cuda',
                               channels_last=name.startswith('channels_last')), GPU_CASES[name][-1])
    assert all(n.startswith('torch::autograd::CppNode<') and 'Core' in n for n in nodes), nodes


@pytest.mark.gpu
def test_fused_core_fresh_inputs_and_poisoned_memory(gpu_tuning):
    """Same function on fresh random inputs, with the allocator's memory poisoned first."""
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_fused

    for seed in range(3):
        torch.empty(64 << 20, device='cuda').fill_(float('nan'))  # poison freed blocks
        _check(relative_errors((2, 50, 19, 27, 4, 'fp32'), ss2d_core_fused, 'cuda', seed), 'fp32')


@pytest.mark.gpu
@pytest.mark.parametrize('cpp_passes', [False, True])
def test_fused_core_compiles_fullgraph(cpp_passes, monkeypatch):
    """Compiled against eager, with the custom ops (and eager mode) running the Python passes
    or the C++ ones."""
    from mmvmamba import ops
    from mmvmamba.ops.triton import host

    monkeypatch.setitem(host.CPP_PASSES, 'ss2d_core', cpp_passes)
    x, params = make_core_inputs(2, 48, 14, 14, 3, device='cuda')
    x.requires_grad_(True)

    def step(x, params):
        out = ops.ss2d_core(x, *params.values(), backend='fused')
        return out.square().sum()

    compiled = torch.compile(step, fullgraph=True)
    loss = compiled(x, params)
    loss.backward()
    eager_x = x.detach().clone().requires_grad_(True)
    step(eager_x, params).backward()
    torch.testing.assert_close(loss, step(eager_x.detach(), params), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, eager_x.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_backbone_fused_core_matches_reference(dtype):
    from mmvmamba.models.backbones.vmamba import VMamba

    arch = dict(dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1, ssm_dt_rank='auto',
                ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0)
    torch.manual_seed(0)
    ref_model = VMamba(arch, drop_path_rate=0.0, core_backend='reference').cuda().eval()
    fused_model = VMamba(arch, drop_path_rate=0.0, core_backend='fused').cuda().eval()
    fused_model.load_state_dict(ref_model.state_dict())
    image = torch.randn(2, 3, 100, 150, device='cuda')
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False), \
            torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        expected = ref_model(image)
        got = fused_model(image)
    tol = TOLERANCE['fp32' if dtype == torch.float32 else 'bf16']
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        err = ((a.double() - b.double()).norm() / b.double().norm()).item()
        assert err <= tol, f'stage output relative error {err} > {tol}'


def test_default_scan_configs_at_measured_shapes():
    """The default tuning's choices at the shapes its figures come from (ss2d_core's
    SCAN_TUNING comment): the detection shape (2 x 96 x 200 x 320, 192 sequences) in 11
    segments and still pipelined; VMamba-T's stage 1 at batch 32 in one paired, unpipelined
    segment; the split pair at dt rank 48 (stage 4) and not at 24 (stage 3)."""
    from mmvmamba.ops.triton.ss2d_core import _paired, scan_config

    detection = scan_config(2, 96, 200 * 320, 6)
    assert (detection.segments, detection.stages) == (11, 3)
    assert not _paired(detection, 200 * 320)
    stage1 = scan_config(32, 96, 56 * 56, 6)
    assert (stage1.segments, stage1.stages, stage1.split_pair) == (1, 1, False)
    assert _paired(stage1, 56 * 56)
    assert scan_config(128, 768, 7 * 7, 48).split_pair
    assert not scan_config(128, 384, 14 * 14, 24).split_pair


if __name__ == '__main__':
    _interpreter_worker()
