"""Count what the host issues per call of the fused SS2D core, the Triton LayerNorm (each in its
Python and its C++ passes) and a VSS block: Python-level torch calls, dispatched ATen ops and
Triton launches.

The eager training step of VMamba at batch 128 is bound by the host's time to issue it
(docs/benchmarks.md), and that time grows with these counts. The kernels run under Triton's CPU
interpreter on tiny CPU tensors (the counts do not depend on the device; the interpreter's own
work inside a launch is not counted)::

    python tools/analysis/count_host_ops.py            # table on stdout
    python tools/analysis/count_host_ops.py --json     # one JSON line

Counts: ``torch calls`` are calls of torch's C functions from Python (tensor methods and
``torch.*`` functions, seen by a ``sys.setprofile`` hook; property reads such as ``.shape`` are
not calls), ``aten ops`` every op the dispatcher runs (views included, C++ autograd nodes
included), ``launches`` Triton kernel launches.
"""
from __future__ import annotations

import os

os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

_STATE = {'paused': False, 'counts': None, 'what': None}
KEYS = ('torch calls', 'aten ops', 'launches')


def _is_torch_builtin(func) -> bool:
    """A C function of torch: a tensor method or a function of a ``torch`` module."""
    owner = getattr(func, '__self__', None)
    if isinstance(owner, torch.Tensor):
        return True
    module = getattr(func, '__module__', None) or getattr(owner, '__name__', None) or ''
    return module == 'torch' or module.startswith(('torch.', 'torch._C'))


def _profile_calls(counts: Counter):
    """A ``sys.setprofile`` hook counting calls of torch's C functions (it sees the Python
    code of ``autograd.Function.backward`` too, which torch-function modes do not)."""
    def hook(frame, event, arg):
        if event == 'c_call' and not _STATE['paused'] and _is_torch_builtin(arg):
            counts['torch calls'] += 1
            counts[f'call:{getattr(arg, "__qualname__", arg)}'] += 1
    return hook


class _AtenCounter(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not _STATE['paused']:
            self.counts['aten ops'] += 1
            self.counts[f'aten:{func.overloadpacket.__name__}'] += 1
        return func(*args, **(kwargs or {}))


def _patch_launches() -> None:
    """Count interpreted launches and keep the interpreter's own torch work out of the counts."""
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction.run

    def counted_run(self, *args, **kwargs):
        if _STATE['counts'] is not None and _STATE['what'] == 'aten':
            _STATE['counts']['launches'] += 1
        _STATE['paused'] = True
        try:
            return run(self, *args, **kwargs)
        finally:
            _STATE['paused'] = False

    InterpretedFunction.run = counted_run


@contextmanager
def counting(counts: Counter, what: str):
    """Count torch calls (``what='calls'``) or ATen ops and launches (``'aten'``): one at a
    time, as the dispatch mode's own calls back into Python would count as torch calls."""
    _STATE['counts'], _STATE['what'] = counts, what
    try:
        if what == 'aten':
            with _AtenCounter(counts):
                yield
        else:
            sys.setprofile(_profile_calls(counts))
            try:
                yield
            finally:
                sys.setprofile(None)
    finally:
        _STATE['counts'] = None


def count_pass(forward, part: str, leaves) -> dict:
    """Counts of ``forward()`` and of the backward of its output, each run twice (calls, then
    ATen ops and launches). ``leaves``' gradients are cleared to None before each backward, as
    a training step's ``zero_grad`` does, so that no accumulation into earlier gradients is
    counted."""
    leaves = list(leaves)
    fwd, bwd = Counter(), Counter()
    for what in ('calls', 'aten'):
        with counting(fwd, what):
            out = forward()
        grad = torch.ones_like(out)
        for leaf in leaves:
            leaf.grad = None
        with counting(bwd, what):
            out.backward(grad)
    return {f'{part} forward': dict(fwd), f'{part} backward': dict(bwd)}


def _core_inputs(batch=2, inner=8, height=5, width=6, rank=2):
    x = torch.randn(batch, inner, height, width).contiguous(memory_format=torch.channels_last)
    params = [torch.randn(4, rank + 2, inner) * inner**-0.5,
              torch.randn(4, inner, rank) * rank**-0.5, torch.randn(4, inner) * 0.5 - 2,
              torch.zeros(4 * inner, 1), torch.ones(4 * inner), torch.ones(inner),
              torch.zeros(inner)]
    return x, params


def count_core() -> dict:
    """The fused core's Python passes and its C++ ones (``ss2d_core_cpp``: the same ATen ops and
    launches, issued from C++; the launches come back to Python only under the interpreter)."""
    from mmvmamba.ops.triton import host
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_cpp, ss2d_core_fused

    x, params = _core_inputs()
    leaves = [x.requires_grad_(True)] + [p.requires_grad_(True) for p in params]
    cpp = host.interpreted_cpp_ops()
    counts = {}
    for part, core in (('ss2d_core', ss2d_core_fused),
                       ('ss2d_core (C++)', functools.partial(ss2d_core_cpp, cpp))):
        core(*leaves).sum().backward()  # warm the kernels and caches
        counts.update(count_pass(lambda core=core: core(*leaves), part, leaves))
    return counts


def count_layer_norm() -> dict:
    from mmvmamba.ops.triton import host
    from mmvmamba.ops.triton.layer_norm_2d import layer_norm_2d

    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    w, b = torch.ones(8, requires_grad=True), torch.zeros(8, requires_grad=True)
    x.requires_grad_(True)
    layer_norm_2d(x, w, b).sum().backward()
    counts = count_pass(lambda: layer_norm_2d(x, w, b), 'layer_norm_2d', (x, w, b))
    cpp = host.interpreted_cpp_ops()
    counts.update(count_pass(lambda: cpp.layer_norm_2d(x, w, b, 1e-5), 'layer_norm_2d (C++)',
                             (x, w, b)))
    return counts


def count_block() -> dict:
    """A VSS block (training, drop path 0.2) with the Triton backends forced onto CPU."""
    from mmvmamba.models.layers.vss_block import VSSBlock
    from mmvmamba.ops import dispatch
    from mmvmamba.ops.triton import layer_norm_2d, ss2d_core_fused

    dispatch.register('ss2d_core', 'fused', ss2d_core_fused, priority=20)
    dispatch.register('layer_norm_2d', 'triton', layer_norm_2d, priority=20)
    torch.manual_seed(0)
    block = VSSBlock(8, drop_path_rate=0.2, ssm_ratio=1.0, core_backend='fused').train()
    block = block.to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    block(x).sum().backward()
    counts = count_pass(lambda: block(x), 'VSS block (training)', [x, *block.parameters()])

    # As AMP training runs it (bf16: CPU autocast's dtype): the stream between blocks is in the
    # autocast dtype (the stem's convolution makes it so and the Triton LayerNorm keeps it).
    x_half = x.detach().bfloat16().requires_grad_(True)

    def mixed_precision():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return block(x_half)

    mixed_precision().float().sum().backward()
    counts.update(count_pass(mixed_precision, 'VSS block (training, autocast)',
                             [x_half, *block.parameters()]))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', action='store_true', help='print one JSON line')
    parser.add_argument('--top', type=int, default=0,
                        help='also list the N most frequent torch calls and ATen ops of each '
                             'part')
    args = parser.parse_args()
    _patch_launches()
    results = {}
    for part in (count_core, count_layer_norm, count_block):
        results.update(part())
    if args.json:
        summary = {name: {k: v for k, v in row.items() if k in KEYS}
                   for name, row in results.items()}
        print(json.dumps(summary))  # noqa: T201 (CLI output)
        return
    width = max(map(len, results)) + 2
    print(' ' * width + ''.join(f'{k:>13s}' for k in KEYS))  # noqa: T201
    for name, row in results.items():
        print(f'{name:{width}s}' + ''.join(f'{row.get(k, 0):13d}' for k in KEYS))  # noqa: T201
    for name, row in results.items() if args.top else ():
        for kind in ('call', 'aten'):
            top = sorted(((v, k[len(kind) + 1:]) for k, v in row.items()
                          if k.startswith(f'{kind}:')), reverse=True)[:args.top]
            print(f'{name} ({kind}): ' + ', '.join(f'{k} {v}' for v, k in top))  # noqa: T201


if __name__ == '__main__':
    main()
