"""The compiled selective-scan op (C++ CPU / CUDA) against the pure-PyTorch reference.

Imports ``mmvmamba._C`` directly: if the op was not built, this module fails (it does not
skip), so CI notices a missing build.
"""
import pytest
import torch
from scan_oracle import make_scan_inputs

from mmvmamba import _C, ops  # noqa: F401  (_C: fail loudly when the op is not built)
from mmvmamba.ops import compiled, reference

compiled.load()  # registers the fake implementations, which opcheck and torch.compile need

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')
LOW = (torch.float16, torch.bfloat16)
# Output (always fp32, computed in fp32 from the same inputs) and gradient tolerances, relative
# to the largest magnitude of the reference tensor; gradients of u, delta, B, C are rounded to
# the input dtype.
OUT_TOL = {torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}
GRAD_TOL = {torch.float32: 5e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

CUDA = pytest.param('cuda', marks=[
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')])
DEVICES = ['cpu', CUDA]


def assert_close_scaled(actual, expected, tol, name):
    """max |actual - expected| <= tol * max |expected| (+ a tiny floor for all-zero tensors)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale + 1e-6, f'{name}: max error {err:.3g} vs scale {scale:.3g}'


def run_both(args, delta_softplus=True, grad_seed=0):
    """Output and gradients of the compiled op and of the reference on the same inputs."""
    results = []
    grad_out = None
    for fn in (compiled.selective_scan, reference.selective_scan):
        leaves = {k: (v.clone().requires_grad_(True) if v is not None else None)
                  for k, v in args.items()}
        out = fn(**leaves, delta_softplus=delta_softplus)
        if grad_out is None:
            gen = torch.Generator().manual_seed(grad_seed)
            grad_out = torch.randn(out.shape, generator=gen).to(out.device)
        out.backward(grad_out)
        grads = {k: v.grad for k, v in leaves.items() if v is not None}
        results.append((out, grads))
    return results


def check_against_reference(args, dtype, delta_softplus=True):
    (out, grads), (ref_out, ref_grads) = run_both(args, delta_softplus)
    assert out.dtype == torch.float32 and out.shape == args['u'].shape
    assert_close_scaled(out, ref_out, OUT_TOL[dtype], 'out')
    for name, ref_grad in ref_grads.items():
        grad = grads[name]
        assert grad.dtype == args[name].dtype, f'd{name} dtype {grad.dtype}'
        assert grad.shape == args[name].shape, f'd{name} shape {tuple(grad.shape)}'
        assert_close_scaled(grad, ref_grad, GRAD_TOL[dtype], f'd{name}')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('groups', [1, 4])
@pytest.mark.parametrize('state', [1, 4, 16])
@pytest.mark.parametrize('length', [1, 7, 63])
def test_matches_reference(device, dtype, groups, state, length):
    args = make_scan_inputs(2, groups, 8, state, length, dtype=dtype, seed=length * state,
                            device=device)
    check_against_reference(args, dtype)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype,groups,state', [(torch.float32, 4, 1), (torch.bfloat16, 4, 1),
                                                (torch.float16, 1, 16), (torch.float32, 4, 4)])
def test_matches_reference_long(device, dtype, groups, state):
    args = make_scan_inputs(1, groups, 8, state, 3137, dtype=dtype, seed=7, device=device)
    check_against_reference(args, dtype)


@pytest.mark.parametrize('dtype,state', [(torch.float32, 2), (torch.bfloat16, 1)])
@pytest.mark.parametrize('device', [CUDA])
def test_cuda_long_rows_split_into_segments(device, dtype, state):
    """Few long rows: the CUDA kernels cut rows into segments (uneven last segment)."""
    args = make_scan_inputs(2, 4, 128, state, 3137, dtype=dtype, seed=5, device=device)
    check_against_reference(args, dtype)


@pytest.mark.parametrize('dtype,state', [(torch.float32, 1), (torch.bfloat16, 1),
                                         (torch.float16, 4)])
@pytest.mark.parametrize('device', [CUDA])
def test_cuda_whole_chunks(device, dtype, state):
    """Rows with L % 8 == 0 (vector loads): the CUDA backward runs its whole-chunk body (no
    bounds checks) on every chunk before a segment's end and the checked body on the row's
    last, short one; 602 rows cut into segments of several chunks (5 on an H100) put some
    blocks of 4 units across segment boundaries, which take the checked body throughout."""
    args = make_scan_inputs(1, 2, 301, state, 8 * 397, dtype=dtype, seed=11, device=device)
    check_against_reference(args, dtype)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('per_group', [1, 2, 3, 4, 6, 24])
def test_channel_tiling(device, per_group):
    """Channels per group that exercise every tile width of the CPU kernel."""
    args = make_scan_inputs(3, 4, per_group, 2, 37, seed=per_group, device=device)
    check_against_reference(args, torch.float32)


@pytest.mark.parametrize('per_group', [3, 8])
def test_portable_cpu_kernels(monkeypatch, per_group):
    """The kernels built without AVX2/FMA (picked on older CPUs) agree too."""
    monkeypatch.setenv('MMVMAMBA_CPU_KERNELS', 'portable')
    args = make_scan_inputs(2, 4, per_group, 4, 70, seed=per_group)
    check_against_reference(args, torch.float32)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('softplus,with_d,with_bias',
                         [(False, True, True), (True, False, True), (True, True, False),
                          (False, False, False)])
def test_optional_arguments(device, softplus, with_d, with_bias):
    args = make_scan_inputs(2, 4, 8, 4, 50, seed=3, device=device)
    if not softplus:
        # Keep dt positive without softplus, or the state grows without bound.
        args['delta'] = args['delta'].abs() * 0.5
        args['delta_bias'] = args['delta_bias'].abs()
    if not with_d:
        args['D'] = None
    if not with_bias:
        args['delta_bias'] = None
    check_against_reference(args, torch.float32, delta_softplus=softplus)


@pytest.mark.parametrize('device', DEVICES)
def test_large_delta_takes_softplus_threshold(device):
    args = make_scan_inputs(1, 4, 8, 2, 20, seed=4, device=device)
    args['delta'] = args['delta'] * 40  # many values above softplus' threshold of 20
    check_against_reference(args, torch.float32)


@pytest.mark.parametrize('device', DEVICES)
def test_non_contiguous_inputs(device):
    dense = make_scan_inputs(2, 4, 8, 4, 33, seed=9, device=device)
    # Same values, non-contiguous layouts: transposed storage and strided slices.
    args = dict(dense)
    args['u'] = dense['u'].transpose(1, 2).contiguous().transpose(1, 2)
    args['delta'] = torch.zeros(2, 32, 66, device=device)[..., ::2]
    args['delta'].copy_(dense['delta'])
    args['B'] = dense['B'].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    args['C'] = torch.stack([dense['C'], dense['C']], dim=-1)[..., 0]
    args['A'] = dense['A'].t().contiguous().t()
    for name in ('u', 'delta', 'B', 'C', 'A'):
        assert not args[name].is_contiguous(), name
    out = compiled.selective_scan(**args)
    torch.testing.assert_close(out, compiled.selective_scan(**dense), rtol=0, atol=0)
    check_against_reference(args, torch.float32)


def test_fixture_matches():
    import os.path as osp
    path = osp.join(osp.dirname(__file__), '..', 'data', 'official_small', 'fixture_scan.pt')
    fixture = torch.load(path)
    args = fixture['args']
    out = compiled.selective_scan(**args, delta_softplus=True)
    torch.testing.assert_close(out, fixture['out_softplus_with_D_bias'], rtol=1e-5, atol=1e-5)
    out = compiled.selective_scan(args['u'], args['delta'], args['A'], args['B'], args['C'],
                                  delta_softplus=False)
    torch.testing.assert_close(out, fixture['out_no_softplus_no_D_no_bias'], rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
def test_opcheck(device):
    args = make_scan_inputs(2, 4, 2, 2, 9, seed=1, device=device)
    fwd_args = tuple(args[k] for k in NAMES)
    for grad in (True, False):
        call = tuple(a.clone().requires_grad_(grad) for a in fwd_args) + (True,)
        torch.library.opcheck(torch.ops.mmvmamba.selective_scan_fwd.default, call)
    no_optional = fwd_args[:5] + (None, None, False)
    torch.library.opcheck(torch.ops.mmvmamba.selective_scan_fwd.default, no_optional)
    dout = torch.randn_like(args['u'])
    torch.library.opcheck(torch.ops.mmvmamba.selective_scan_bwd.default,
                          (dout,) + fwd_args + (True,))
    # The training forward (not differentiable itself) and the backward from its checkpoints.
    torch.library.opcheck(torch.ops.mmvmamba.selective_scan_fwd_train.default,
                          fwd_args + (True,))
    _, states = torch.ops.mmvmamba.selective_scan_fwd_train(*fwd_args, True)
    torch.library.opcheck(torch.ops.mmvmamba.selective_scan_bwd.default,
                          (dout,) + fwd_args + (True, states))


def reference_states(args, stride):
    """States entering every ``stride``-th position, (N, B, K*Cg, ceil(L / stride)) float64."""
    u, delta, A = args['u'].double(), args['delta'].double(), args['A'].double()
    batch, channels, length = u.shape
    groups = args['B'].shape[1]
    B = args['B'].double().repeat_interleave(channels // groups, dim=1)  # (B, K*Cg, N, L)
    dt = torch.nn.functional.softplus(delta + args['delta_bias'].double()[:, None])
    h = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64, device=u.device)
    states = []
    for pos in range(length):
        if pos % stride == 0:
            states.append(h.clone())
        decay = torch.exp(dt[..., pos, None] * A)
        h = decay * h + (dt[..., pos] * u[..., pos])[..., None] * B[..., pos]
    return torch.stack(states, dim=-1).permute(2, 0, 1, 3)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('length', [5, 70, 300])
def test_training_forward_checkpoints(device, length):
    """fwd_train's output equals the forward's; on CUDA its checkpoints are the exact states
    entering every stride-th position (the CPU backward needs none: an empty tensor)."""
    args = make_scan_inputs(2, 2, 3, 2, length, seed=length, device=device)
    call = tuple(args[k] for k in NAMES) + (True,)
    out, states = torch.ops.mmvmamba.selective_scan_fwd_train(*call)
    torch.testing.assert_close(out, torch.ops.mmvmamba.selective_scan_fwd(*call), rtol=0, atol=0)
    if device == 'cpu':
        assert states.shape == (0,)
        return
    expected = reference_states(args, _C.state_stride())
    assert states.dtype == torch.float32 and states.shape == expected.shape
    torch.testing.assert_close(states.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('shape', [(2, 4, 8, 3, 200), (1, 2, 256, 1, 3000)])
def test_backward_without_checkpoints_recomputes_them(device, shape):
    """The backward called without checkpoints (or with an empty tensor) gives the gradients it
    gives from fwd_train's checkpoints (the second shape is cut into segments on CUDA)."""
    args = make_scan_inputs(*shape, seed=11, device=device)
    call = tuple(args[k] for k in NAMES)
    dout = torch.randn_like(args['u'])
    _, states = torch.ops.mmvmamba.selective_scan_fwd_train(*call, True)
    with_states = torch.ops.mmvmamba.selective_scan_bwd(dout, *call, True, states)
    # Same arithmetic either way, but dA, dB, dC, dD and dbias are summed with atomics (over
    # segments, channels, the batch) whose order varies between launches: where those partial
    # sums cancel, the result moves by more than 1e-5 of itself (seen on an H100: dA, 2.8e-5).
    # So the tolerance is relative to each gradient's largest magnitude; a wrong checkpoint
    # changes the gradients at order one.
    for missing in (None, states.new_empty((0,))):
        recomputed = torch.ops.mmvmamba.selective_scan_bwd(dout, *call, True, missing)
        for name, got, want in zip(('du', 'ddelta', 'dA', 'dB', 'dC', 'dD', 'dbias'),
                                   recomputed, with_states):
            assert_close_scaled(got, want, 1e-4, name)


@pytest.mark.parametrize('states_of', [
    lambda s: s[..., :-1],  # wrong shape
    lambda s: s.double(),  # wrong dtype
    lambda s: torch.zeros(*s.shape[:-1], 2 * s.shape[-1])[..., ::2],  # not contiguous
])
def test_backward_rejects_mismatched_checkpoints(states_of):
    """Checkpoints not in fwd_train's CUDA layout are an error on every device (the CPU
    backward checks them too, though it does not need them). Runs on the CPU: on the GPU
    machine any C++ exception thrown from a locally built extension crashes the process
    (docs/architecture.md, "Errors from the compiled op")."""
    args = make_scan_inputs(2, 4, 2, 1, 70, seed=1)
    call = tuple(args[k] for k in NAMES)
    layout = torch.zeros(1, 2, 8, 3)  # (N, B, K*Cg, ceil(70 / 32)), the CUDA checkpoints
    assert layout.shape[-1] == -(-70 // _C.state_stride())
    dout = torch.randn_like(args['u'])
    torch.ops.mmvmamba.selective_scan_bwd(dout, *call, True, layout)  # accepted
    with pytest.raises(RuntimeError, match='states must be the contiguous float32'):
        torch.ops.mmvmamba.selective_scan_bwd(dout, *call, True, states_of(layout))


@pytest.mark.parametrize('rows,length,items,wave', [
    (768, 64000, 4, 3168),  # the detection shape's backward on an H100 (6 blocks of 4 warps)
    (768, 64000, 8, 4224),  # its forward (8 blocks)
    (1024, 3137, 8, 4224), (512, 3000, 4, 3168), (8, 5, 8, 4224), (7, 100000, 4, 3168),
    (12288, 3136, 4, 3168),  # VMamba-T stage 1, batch 32: enough rows, not cut
])
def test_launch_config_fills_waves(rows, length, items, wave):
    """The CUDA work split (pure C++, checked here without a GPU): segments tile the row in whole
    chunks that start on checkpoints; rows are cut only when uncut they fill < 70% of a wave,
    and then the units fill their waves to at least 85%."""
    c = _C.launch_config(rows, length, items, wave)
    assert c['chunk'] == c['tpr'] * items and c['chunk'] % _C.state_stride() == 0
    assert c['seg_len'] == c['chunks_per_seg'] * c['chunk']
    assert (c['num_segs'] - 1) * c['seg_len'] < length <= c['num_segs'] * c['seg_len']
    row_warps = max(1, rows * c['tpr'] // 32)
    if 10 * row_warps >= 7 * wave:
        assert c['num_segs'] == 1
    elif c['num_segs'] < -(-length // c['chunk']):  # not every chunk its own segment
        warps = c['num_segs'] * row_warps
        assert warps / (-(-warps // wave) * wave) >= 0.85


def test_launch_config_detection_shape():
    """(2, 384, 64000): the backward in one full wave (4 segments), the forward in two (11)."""
    assert _C.launch_config(768, 64000, 4, 3168)['num_segs'] == 4
    assert _C.launch_config(768, 64000, 8, 4224)['num_segs'] == 11


def _scan_loss_fn(args):
    def fn(u, delta):
        y = ops.selective_scan(u * 2, delta, args['A'], args['B'], args['C'], args['D'],
                               args['delta_bias'], backend='compiled')
        return (y.relu() + 1).sum()
    return fn


def test_torch_compile_inductor_forward():
    """Inductor (C++ codegen on CPU) compiles a graph around the op in one piece."""
    args = make_scan_inputs(1, 4, 2, 1, 12, seed=2)
    fn = _scan_loss_fn(args)
    torch._dynamo.reset()
    compiled_fn = torch.compile(fn, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled_fn(args['u'], args['delta']),
                                   fn(args['u'], args['delta']))


def test_torch_compile_training_graph():
    """AOTAutograd traces forward and backward through the fake and autograd registrations."""
    args = make_scan_inputs(1, 4, 2, 1, 12, seed=2)
    fn = _scan_loss_fn(args)
    torch._dynamo.reset()
    compiled_fn = torch.compile(fn, fullgraph=True, backend='aot_eager')
    leaves = [args['u'].clone().requires_grad_(True), args['delta'].clone().requires_grad_(True)]
    eager = [args['u'].clone().requires_grad_(True), args['delta'].clone().requires_grad_(True)]
    loss = compiled_fn(*leaves)
    loss.backward()
    eager_loss = fn(*eager)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    for got, want in zip(leaves, eager):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize('bad,match', [
    (dict(A=torch.zeros(8, 3)), 'A must be'),
    (dict(B=torch.zeros(1, 3, 1, 5), C=torch.zeros(1, 3, 1, 5)), 'not divisible'),
    (dict(C=torch.zeros(1, 4, 1, 6)), 'B and C must both'),
    (dict(D=torch.zeros(7)), 'D must have shape'),
    (dict(delta=torch.zeros(1, 8, 4)), "delta must have u's shape"),
    (dict(A=torch.zeros(8, 1, dtype=torch.float64)), 'A must be float32'),
])
def test_bad_arguments_raise(bad, match):
    args = make_scan_inputs(1, 4, 2, 1, 5)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        compiled.selective_scan(**args)


def test_state_size_limit():
    args = make_scan_inputs(1, 1, 2, 17, 5)
    with pytest.raises(RuntimeError, match='state size N must be in'):
        compiled.selective_scan(**args)


def test_auto_prefers_compiled_and_reports_library():
    assert ops.dispatch.resolve_name('selective_scan', 'auto', 'cpu') == 'compiled'
    assert compiled.library_path().endswith('.so')
    assert isinstance(compiled.built_cuda_archs(), str)
    assert compiled.availability(torch.device('cpu')) == (True, '')
