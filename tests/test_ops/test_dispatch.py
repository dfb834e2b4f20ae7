"""Backend choice: env var, explicit argument, auto priority, errors, logging, torch.compile."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from scan_oracle import make_scan_inputs

from mmvmamba import ops
from mmvmamba.ops import dispatch

OP = 'test_dummy_op'


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def records():
    handler = _Records()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture
def dummy_op():
    """A throwaway op with an available low-priority and an unavailable high-priority backend."""
    dispatch.register(OP, 'slow', lambda x: ('slow', x), priority=0)
    dispatch.register(OP, 'fast', lambda x: ('fast', x),
                      check=lambda device: (False, 'fast is not built; run make fast'),
                      priority=5)
    dispatch.register(OP, 'medium', lambda x: ('medium', x),
                      check=lambda device: (device.type == 'cpu', 'CPU only'), priority=3)
    dispatch.ENV_VARS[OP] = 'MMVMAMBA_TEST_DUMMY_BACKEND'
    yield OP
    dispatch._REGISTRY.pop(OP)
    dispatch._RESOLVED.clear()
    dispatch.ENV_VARS.pop(OP)
    dispatch._LOGGED.difference_update({k for k in dispatch._LOGGED if k[0] == OP})


def test_auto_picks_highest_priority_available(dummy_op, monkeypatch):
    monkeypatch.delenv('MMVMAMBA_TEST_DUMMY_BACKEND', raising=False)
    assert dispatch.resolve_name(dummy_op, None, 'cpu') == 'medium'
    assert dispatch.resolve_name(dummy_op, 'auto', 'cpu') == 'medium'
    assert dispatch.resolve_name(dummy_op, 'auto', 'meta') == 'slow'


def test_env_var_and_argument(dummy_op, monkeypatch):
    monkeypatch.setenv('MMVMAMBA_TEST_DUMMY_BACKEND', 'slow')
    assert dispatch.resolve_name(dummy_op, None, 'cpu') == 'slow'
    # An explicit argument wins over the environment.
    assert dispatch.resolve_name(dummy_op, 'medium', 'cpu') == 'medium'
    assert dispatch.resolve(dummy_op, None, torch.device('cpu'))(1) == ('slow', 1)


def test_forcing_unavailable_backend_raises_with_reason(dummy_op, monkeypatch):
    with pytest.raises(RuntimeError, match='run make fast'):
        dispatch.resolve_name(dummy_op, 'fast', 'cpu')
    monkeypatch.setenv('MMVMAMBA_TEST_DUMMY_BACKEND', 'fast')
    with pytest.raises(RuntimeError, match='MMVMAMBA_TEST_DUMMY_BACKEND'):
        dispatch.resolve_name(dummy_op, None, 'cpu')
    with pytest.raises(RuntimeError, match='CPU only'):
        dispatch.resolve_name(dummy_op, 'medium', 'meta')


def test_unknown_names_raise(dummy_op):
    with pytest.raises(KeyError, match='medium'):
        dispatch.resolve_name(dummy_op, 'nonexistent', 'cpu')
    with pytest.raises(KeyError, match='no backends registered'):
        dispatch.resolve_name('no_such_op', None, 'cpu')
    with pytest.raises(ValueError, match='reserved'):
        dispatch.register(dummy_op, 'auto', lambda x: x)


def test_choice_logged_once_per_op_and_device(dummy_op, records):
    for _ in range(3):
        dispatch.resolve_name(dummy_op, 'auto', 'cpu')
    dispatch.resolve_name(dummy_op, 'auto', 'meta')
    mine = [m for m in records if dummy_op in m]
    assert len(mine) == 2, mine
    assert "'medium'" in mine[0] and 'run make fast' in mine[0]
    assert "'slow'" in mine[1]


def test_resolve_memo_follows_env_var(dummy_op, monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setenv('MMVMAMBA_TEST_DUMMY_BACKEND', 'slow')
    assert dispatch.resolve(dummy_op, None, cpu)(0)[0] == 'slow'
    monkeypatch.setenv('MMVMAMBA_TEST_DUMMY_BACKEND', 'medium')
    assert dispatch.resolve(dummy_op, None, cpu)(0)[0] == 'medium'
    dispatch.register(dummy_op, 'newest', lambda x: ('newest', x), priority=9)
    assert dispatch.resolve(dummy_op, 'auto', cpu)(0)[0] == 'newest'


def test_public_scan_honours_env_var(monkeypatch):
    args = make_scan_inputs(1, 4, 2, 1, 9)
    monkeypatch.setenv('MMVMAMBA_SCAN_BACKEND', 'reference')
    out = ops.selective_scan(**args)
    assert dispatch.resolve_name('selective_scan', None, 'cpu') == 'reference'
    monkeypatch.setenv('MMVMAMBA_SCAN_BACKEND', 'no_such_backend')
    with pytest.raises(KeyError, match='MMVMAMBA_SCAN_BACKEND'):
        ops.selective_scan(**args)
    assert out.shape == args['u'].shape


def test_resolution_compiles_without_graph_break(monkeypatch):
    monkeypatch.delenv('MMVMAMBA_SCAN_BACKEND', raising=False)
    torch._dynamo.reset()
    args = make_scan_inputs(1, 4, 2, 1, 6)

    def fn(u, delta):
        y = ops.selective_scan(u, delta, args['A'], args['B'], args['C'], args['D'],
                               args['delta_bias'], backend='reference')
        return ops.layer_norm_2d(y.view(1, 8, 2, 3), None, None) + ops.cross_merge(
            ops.cross_scan(y.view(1, 8, 2, 3)), 2, 3)

    compiled = torch.compile(fn, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(args['u'], args['delta']), fn(args['u'], args['delta']))


def test_missing_library_is_an_error_with_build_instructions(monkeypatch):
    """Forcing the compiled scan without mmvmamba._C says how to build it; auto falls back."""
    from mmvmamba.ops import compiled
    monkeypatch.setitem(compiled._STATE, 'module', None)
    monkeypatch.setitem(compiled._STATE, 'error', 'the compiled op mmvmamba._C could not be '
                        f'loaded (simulated); {compiled.BUILD_HINT}')
    with pytest.raises(RuntimeError, match='setup.py build_ext --inplace'):
        dispatch.resolve_name('selective_scan', 'compiled', 'cpu')
    assert dispatch.resolve_name('selective_scan', 'auto', 'cpu') == 'reference'


def test_cuda_availability_of_a_cpu_only_build():
    from mmvmamba.ops import compiled
    module = compiled.load()
    ok, reason = compiled.availability(torch.device('cuda'))
    if module.with_cuda():
        assert ok and module.cuda_archs()
    else:
        assert not ok and 'MMVMAMBA_CUDA_ARCH_LIST' in reason


def test_auto_core_takes_reference_for_state_size_above_one(monkeypatch, records):
    """'auto' must not pick the fused core (N = 1 only) for N > 1; a named backend passes."""
    monkeypatch.delenv('MMVMAMBA_SS2D_BACKEND', raising=False)
    dispatch._LOGGED.discard(('ss2d_core', 'fallback', 'reference'))
    reason = 'N = 4'
    for _ in range(2):
        assert dispatch.auto_fallback('ss2d_core', None, 'reference', reason) == 'reference'
        assert dispatch.auto_fallback('ss2d_core', 'auto', 'reference', reason) == 'reference'
    assert dispatch.auto_fallback('ss2d_core', 'fused', 'reference', reason) == 'fused'
    monkeypatch.setenv('MMVMAMBA_SS2D_BACKEND', 'fused')
    assert dispatch.auto_fallback('ss2d_core', None, 'reference', reason) is None
    mine = [m for m in records if 'some inputs' in m]
    assert len(mine) == 1 and 'N = 4' in mine[0]


@pytest.mark.gpu
def test_auto_core_runs_a_state_size_four_model_on_cuda(monkeypatch):
    """A VMamba with d_state 4 trains on CUDA under 'auto' (it used to pick the fused core and
    raise) and matches the reference core; forcing 'fused' still raises."""
    from mmvmamba.models.backbones.vmamba import VMamba

    monkeypatch.delenv('MMVMAMBA_SS2D_BACKEND', raising=False)
    arch = dict(dims=16, depths=(1, 1, 1, 1), ssm_ratio=2.0, ssm_d_state=4, ssm_dt_rank='auto',
                ssm_conv=3, ssm_conv_bias=False, mlp_ratio=2.0)
    torch.manual_seed(0)
    auto = VMamba(arch, drop_path_rate=0.0).cuda()
    ref = VMamba(arch, drop_path_rate=0.0, core_backend='reference').cuda()
    ref.load_state_dict(auto.state_dict())
    image = torch.randn(2, 3, 64, 96, device='cuda')
    out = auto(image)
    sum(o.sum() for o in out).backward()
    for a, b in zip(out, ref(image)):
        torch.testing.assert_close(a, b)
    forced = VMamba(arch, drop_path_rate=0.0, core_backend='fused').cuda()
    with pytest.raises(NotImplementedError, match='N = 1'):
        forced(image)


def test_auto_norm_takes_reference_under_compile_without_autograd(monkeypatch):
    """Under torch.compile without autograd, 'auto' gives layer_norm_2d to inductor (the
    plain-torch form) even when a faster eager backend is registered; when autograd records the
    call (training) 'auto' keeps the eager choice; a backend named explicitly is always used."""
    monkeypatch.delenv('MMVMAMBA_NORM_BACKEND', raising=False)
    dispatch.register('layer_norm_2d', 'probe', lambda x, w, b, eps: 'probe', priority=99)
    try:
        x = torch.randn(2, 3, 4, 5)
        weight = torch.ones(3, requires_grad=True)
        assert ops.layer_norm_2d(x, None, None) == 'probe'
        monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
        out = ops.layer_norm_2d(x, None, None)
        torch.testing.assert_close(out, ops.reference.layer_norm_2d(x, None, None))
        assert ops.layer_norm_2d(x, weight, None) == 'probe'  # training: autograd records it
        with torch.no_grad():
            out = ops.layer_norm_2d(x, weight, None)
        torch.testing.assert_close(out, ops.reference.layer_norm_2d(x, weight, None))
        assert ops.layer_norm_2d(x, None, None, backend='probe') == 'probe'
    finally:
        dispatch._REGISTRY['layer_norm_2d'].pop('probe')
        dispatch._RESOLVED.clear()
