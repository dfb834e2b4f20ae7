"""Benchmark VMamba against timm's Swin-T / ConvNeXt-T on one CUDA GPU; CSV + PNG + env JSON.

Sections (``--sections``, comma separated):

- ``core``: the SS2D core alone (post-activation map -> merged, normalised output), bf16 input,
  forward and forward+backward, at VMamba-T's four stage shapes (batch 32) and the detection
  shape (batch 2, 96 ch, 200x320), per ss2d_core backend (``--core-backends``).
- ``models``: whole classifiers at ``--batch`` x 224: bf16-autocast inference and
  fp16-autocast training (forward + cross-entropy + backward, gradients cleared as an
  optimizer's ``zero_grad`` does, no optimizer step; ``--modes``
  picks them, default both) img/s and peak memory, eager.
- ``compile``: the same under ``torch.compile`` (VMamba with ``fullgraph=True``), compile time
  recorded; ``--compile-mode`` (default: torch.compile's own) for every model alike, e.g.
  ``max-autotune-no-cudagraphs`` (Triton GEMM templates, which inductor can fuse pointwise
  epilogues such as the MLP's GELU into); the row's ``variant`` names a mode other than the
  default.
- ``resolution``: bf16 inference at batch 32 across 224-1024.
- ``norm``: the Triton LayerNorm2d's forward and backward launchers alone (kernel time, the
  backward's weight-gradient sum included) at ``--norm-arch``'s four stages at ``--batch``:
  the blocks' norms (bf16, channels-last, ``dim`` channels) and the core's output norm (its
  fp32 merged map, positions contiguous in padded rows, ``dim * ssm_ratio`` channels; the
  output gradient bf16 channels-last), per launch shape in ``--norm-tunings`` (``NORM_TUNING``
  values, ``/`` between variants; the Python passes, which read the table).
- ``profile``: torch.profiler of ``--profile-models`` (default VMamba-T) inference and
  training, eager or compiled (``--profile-compiled``): GPU time per step by kernel category
  (scan, GEMM, norm, ...), the top CUDA kernels (a table, then the top 40 by full name) and
  the number launched per iteration.
- ``host``: the host's time per eager step (``--host-batch``, default 2, so that the GPU keeps
  up and the wall time of back-to-back steps is what the Python side needs to issue them), per
  model, inference and training (median of 5 runs); a ``cProfile`` of VMamba-T's training
  steps (top functions by own time) in ``host_profile_vmamba_tiny_train.txt`` and the host
  time per ATen op (``torch.profiler``, CPU) in ``host_ops_vmamba_tiny_train.txt``.

Method (as the issue's anchors): ``torch.randn`` inputs, warm-up then timed iterations each
bracketed by CUDA events, median reported, img/s = batch / median, peak memory =
``torch.cuda.max_memory_allocated`` over the timed loop, ``cudnn.benchmark=False``. Core, model
and compiled rows also give ``gpu_ms``, the GPU's kernel time per call from ``torch.profiler``
(5 more calls): where the median ``ms`` exceeds it, the call waited on the host.

Example::

    python tools/analysis/benchmark.py --sections core,models --out work_dirs/bench
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: The core section's shapes ``(batch, inner channels, H, W, dt rank)``: VMamba-T's four stages
#: at batch 32 and the detection shape (the issue's anchors).
CORE_SHAPES = ((32, 96, 56, 56, 6), (32, 192, 28, 28, 12), (32, 384, 14, 14, 24),
               (32, 768, 7, 7, 48), (2, 96, 200, 320, 6))
RESOLUTIONS = (224, 384, 512, 640, 768, 1024)
FIELDS = ('section', 'model', 'variant', 'mode', 'dtype', 'batch', 'size', 'ms', 'gpu_ms',
          'img_per_s', 'peak_mib', 'compile_s', 'note')


def stage_shapes(arch: str) -> list[tuple[int, int, int]]:
    """``(dim, inner channels dim * ssm_ratio, side)`` of each stage of a VMamba arch at a
    224 input (sides 56, 28, 14, 7)."""
    from mmvmamba.models.backbones.vmamba import resolve_arch

    settings = resolve_arch(arch)
    return [(dim, int(dim * settings['ssm_ratio']), 56 >> i)
            for i, dim in enumerate(settings['dims'])]


def core_shapes(arch: str, batch: int = 32) -> tuple[tuple[int, int, int, int, int], ...]:
    """The core section's shapes for ``--core-arch`` and ``--core-batch``: 'tiny' at batch 32
    (:data:`CORE_SHAPES`: the goal's shapes, with the detection shape), else the four stage
    shapes of the arch at ``batch`` (dt rank ``ceil(dim / 16)``; batch 128 is the training
    benchmark's)."""
    if arch == 'tiny' and batch == 32:
        return CORE_SHAPES
    return tuple((batch, inner, side, side, math.ceil(dim / 16))
                 for dim, inner, side in stage_shapes(arch))


class VMambaClassifier(nn.Module):
    """VMamba backbone (its ``outnorm3`` is the classifier norm) + average pool + linear head."""

    def __init__(self, arch: str, drop_path_rate: float, num_classes: int = 1000,
                 core_backend: str | None = None) -> None:
        super().__init__()
        from mmvmamba.models.backbones.vmamba import VMamba

        self.backbone = VMamba(arch, out_indices=(3, ), drop_path_rate=drop_path_rate,
                               core_backend=core_backend)
        self.head = nn.Linear(self.backbone.dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1].mean(dim=(2, 3)))


def build_model(name: str, size: int = 224) -> nn.Module:
    """``vmamba_{tiny,small,base}`` (published drop-path rates) or a timm model name."""
    if name.startswith('vmamba_'):
        arch = name.split('_', 1)[1]
        rate = {'tiny': 0.2, 'small': 0.3, 'base': 0.6}[arch]
        return VMambaClassifier(arch, rate)
    import timm

    kwargs = {'img_size': size} if name.startswith('swin') and size != 224 else {}
    return timm.create_model(name, pretrained=False, **kwargs)


def time_cuda(fn: Callable[[], object], warmup: int, iters: int) -> tuple[float, float]:
    """Median milliseconds per call and peak MiB over the timed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    events = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize()
    ms = statistics.median(s.elapsed_time(e) for s, e in events)
    return ms, torch.cuda.max_memory_allocated() / 2**20


def profiled(fn: Callable[[], object], iters: int, activity: str = 'cuda'):
    """``torch.profiler`` over ``iters`` back-to-back calls of ``fn``, synchronised at the end;
    ``activity``: 'cuda' (kernels) or 'cpu' (host ops). The caller warms up."""
    from torch.profiler import ProfilerActivity, profile

    kind = ProfilerActivity.CUDA if activity == 'cuda' else ProfilerActivity.CPU
    with profile(activities=[kind]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return prof


def kernel_ms(fn: Callable[[], object], iters: int = 5) -> float:
    """GPU kernel time per call in milliseconds: the self device time of every kernel (and
    memcpy/memset) ``torch.profiler`` records over ``iters`` calls, divided by ``iters``.

    Beside :func:`time_cuda`'s wall clock between CUDA events, which includes the gaps where
    the GPU waits for the host to issue the next kernel: where ``ms`` exceeds ``gpu_ms`` the
    call is (partly) bound by host time, not by its kernels."""
    fn()
    torch.cuda.synchronize()
    prof = profiled(fn, iters)
    return sum(e.self_device_time_total for e in prof.key_averages()) / iters / 1e3


def inference_step(model: nn.Module, batch: int, size: int, dtype: torch.dtype) -> Callable:
    model.eval()
    x = torch.randn(batch, 3, size, size, device='cuda')

    def step():
        with torch.no_grad(), torch.autocast('cuda', dtype=dtype):
            return model(x)
    return step


def training_step(model: nn.Module, batch: int, size: int, dtype: torch.dtype) -> Callable:
    """A training step without the optimizer's update. The gradients are cleared as an
    optimizer's ``zero_grad(set_to_none=True)`` does (mmengine's ``OptimWrapper`` calls it), over
    a list of the parameters: ``model.zero_grad`` walks the module tree every step, which cost
    VMamba-T about 5 ms of host time per step (run 89's cProfile), and VMamba-T's eager step is
    as long on the host as on the GPU (session 17)."""
    model.train()
    x = torch.randn(batch, 3, size, size, device='cuda')
    target = torch.randint(0, 1000, (batch, ), device='cuda')
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        for param in params:
            param.grad = None
        with torch.autocast('cuda', dtype=dtype):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
    return step


#: The two measured modes: autocast dtype, its name in the rows, and the step builder.
MODES = {'infer': (torch.bfloat16, 'bf16', inference_step),
         'train': (torch.float16, 'fp16-amp', training_step)}


def row(**kw) -> dict:
    out = dict.fromkeys(FIELDS, '')
    out.update(kw)
    return out


#: CSV file that every reported row is appended to at once (so a run cut short keeps its rows).
LIVE_CSV: list = []


def report(rows: list[dict], entry: dict) -> None:
    rows.append(entry)
    for path in LIVE_CSV:
        new = not os.path.exists(path)
        with open(path, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(entry)
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in entry.items() if v != ''}
    print(json.dumps(shown), flush=True)  # noqa: T201 (CLI output)


def parse_tunings(spec: str) -> list[dict]:
    """``'4:64:2:8:4:512:0,16:64:8:16:8:512:1,4:64:2:4:2:512:0:8'`` -> fused-scan tunings.

    Fields: block_d:block_l:num_warps:bwd_block_d:bwd_num_warps:min_programs[:dt_dot
    [:rank_block[:stages]]] (see ``SCAN_TUNING``; the knobs not given keep their defaults).
    """
    keys = ('block_d', 'block_l', 'num_warps', 'bwd_block_d', 'bwd_num_warps', 'min_programs',
            'dt_dot', 'rank_block', 'stages')
    tunings = []
    for item in filter(None, spec.split(',')):
        tuning = dict(zip(keys, map(int, item.split(':'))))
        tuning['dt_dot'] = bool(tuning.get('dt_dot', 0))
        tunings.append(tuning)
    return tunings


def set_knobs(table: dict, spec: str, flag: str, convert) -> dict:
    """Set entries of ``table`` from ``'key=value,...'`` (``convert``-ed); an unknown key is an
    error, not a silent no-op. Returns a copy of the table in force."""
    for item in filter(None, spec.split(',')):
        key, _, value = item.partition('=')
        if key not in table:
            raise SystemExit(f'{flag}: unknown key {key!r}; keys: {sorted(table)}')
        table[key] = convert(value)
    return dict(table)


def apply_scan_tuning(spec: str) -> dict:
    """Set ``SCAN_TUNING`` knobs from ``'key=int,...'`` (e.g. ``rank_block=8``)."""
    from mmvmamba.ops.triton.ss2d_core import SCAN_TUNING

    return set_knobs(SCAN_TUNING, spec, '--scan-tuning', int)


def apply_cpp_passes(spec: str) -> dict:
    """Set ``host.CPP_PASSES`` from ``'op=0|1,...'`` (e.g. ``ss2d_core=1``)."""
    from mmvmamba.ops.triton.host import CPP_PASSES

    return set_knobs(CPP_PASSES, spec, '--cpp-passes', lambda value: bool(int(value)))


def core_inputs(batch: int, inner: int, height: int, width: int,
                rank: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The core section's seeded CUDA inputs for one shape: the bf16 activation ``x (B, D, H,
    W)``, the seven fp32 parameters in ``ops.ss2d_core``'s order, and a bf16 output gradient."""
    gen = torch.Generator(device='cuda').manual_seed(0)

    def randn(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, device='cuda', generator=gen) * scale + shift

    x = F.silu(randn(batch, inner, height, width)).to(torch.bfloat16)
    params = [randn(4, rank + 2, inner, scale=inner**-0.5),
              randn(4, inner, rank, scale=rank**-0.5), randn(4, inner, scale=0.5, shift=-4),
              torch.zeros(4 * inner, 1, device='cuda'), torch.ones(4 * inner, device='cuda'),
              torch.ones(inner, device='cuda'), torch.zeros(inner, device='cuda')]
    grad = randn(batch, inner, height, width).to(torch.bfloat16)
    return x, params, grad


def bench_core(rows: list[dict], backends: list[str], warmup: int, iters: int,
               tunings: list[dict], shapes=CORE_SHAPES) -> None:
    from mmvmamba import ops
    from mmvmamba.ops.triton.ss2d_core import SCAN_TUNING

    default_tuning = dict(SCAN_TUNING)
    variants = [(b, None) for b in backends if b != 'fused' or not tunings]
    if 'fused' in backends:
        variants += [('fused', t) for t in tunings]

    for batch, inner, height, width, rank in shapes:
        x, params, grad = core_inputs(batch, inner, height, width, rank)
        shape = f'{batch}x{inner}x{height}x{width}'
        for backend, tuning in variants:
            SCAN_TUNING.update(default_tuning, **(tuning or {}))
            t = SCAN_TUNING  # the tuning in force, defaults included
            fwd_dot = f",fwd dot R>={t['fwd_dot_min_rank']}" if t['fwd_dot_min_rank'] else ''
            name = backend if tuning is None else (
                f"fused[{t['block_d']}x{t['block_l']},w{t['num_warps']},"
                f"bwd {t['bwd_block_d']}x{t['block_l']},w{t['bwd_num_warps']},"
                f"p{t['min_programs']}{',dot' if t['dt_dot'] else ',rb' + str(t['rank_block'])}"
                f",s{t['stages']}<={t['pipeline_max_programs']}"
                f"{fwd_dot}]")

            def forward(backend=backend, x=x, params=params):
                with torch.no_grad():
                    return ops.ss2d_core(x, *params, backend=backend)

            leaves = [x.clone().requires_grad_(True)] + [
                p.clone().requires_grad_(True) for p in params]

            def forward_backward(backend=backend, leaves=leaves, grad=grad):
                for leaf in leaves:
                    leaf.grad = None
                ops.ss2d_core(*leaves, backend=backend).backward(grad)

            for mode, fn in (('fwd', forward), ('fwd+bwd', forward_backward)):
                ms, peak = time_cuda(fn, warmup, iters)
                report(rows, row(section='core', model='ss2d_core', variant=name, mode=mode,
                                 dtype='bf16', batch=batch, size=shape, ms=ms,
                                 gpu_ms=kernel_ms(fn), peak_mib=peak))
    SCAN_TUNING.update(default_tuning)


def parse_norm_tunings(spec: str) -> list[dict]:
    """``'default/tile_elements=8192,bwd_warps=8'`` -> the ``NORM_TUNING`` tables to measure
    (the default table first; unknown keys are an error)."""
    from mmvmamba.ops.triton.layer_norm_2d import NORM_TUNING

    default = dict(NORM_TUNING)
    tunings = []
    for item in filter(None, spec.split('/')):
        tuning = set_knobs(dict(default), '' if item == 'default' else item, '--norm-tunings',
                           int)
        tunings.append(tuning)
    return tunings or [default]


def norm_shapes(arch: str, batch: int) -> list[tuple[str, int, int, int]]:
    """``(kind, batch, channels, side)`` of the norms at each stage of ``arch`` (224 input):
    'block' (``dim`` channels) and 'core_out' (``dim * ssm_ratio``)."""
    shapes = []
    for dim, inner, side in stage_shapes(arch):
        shapes += [('block', batch, dim, side), ('core_out', batch, inner, side)]
    return shapes


def norm_calls(kind: str, n: int, channels: int, side: int) -> tuple[str, dict]:
    """The norm section's forward and backward launches at one shape (see
    :func:`norm_shapes`), with the dtype of their input map."""
    from mmvmamba.ops.triton.layer_norm_2d import ln2d_backward, ln2d_forward
    from mmvmamba.ops.triton.ss2d_core import _row_stride

    length = side * side
    gen = torch.Generator(device='cuda').manual_seed(0)
    cl = torch.channels_last
    grad = torch.randn(n, channels, side, side, device='cuda', generator=gen).to(
        torch.bfloat16).contiguous(memory_format=cl).flatten(2)
    if kind == 'block':
        x, grad_dtype = grad.clone(), torch.bfloat16
    else:  # the core's merged fp32 map, in its padded rows
        x = torch.randn(n, channels, _row_stride(length), device='cuda',
                        generator=gen)[..., :length]
        grad_dtype = torch.float32
    out = torch.empty(n, channels, side, side, device='cuda', dtype=torch.bfloat16,
                      memory_format=cl).flatten(2)
    weight = torch.ones(channels, device='cuda')
    _, stats = ln2d_forward(x, weight, weight, 1e-5, out)
    grad_x = torch.empty_like(x, dtype=grad_dtype)
    return str(x.dtype).replace('torch.', ''), dict(
        fwd=lambda: ln2d_forward(x, weight, weight, 1e-5, out),
        bwd=lambda: ln2d_backward(grad, x, weight, stats, grad_dtype, grad_x))


def bench_norm(rows: list[dict], arch: str, batch: int, warmup: int, iters: int,
               tunings: list[dict]) -> None:
    from mmvmamba.ops.triton.layer_norm_2d import NORM_TUNING

    default = dict(NORM_TUNING)
    for kind, n, channels, side in norm_shapes(arch, batch):
        dtype, calls = norm_calls(kind, n, channels, side)
        for tuning in tunings:
            NORM_TUNING.update(tuning)
            name = ','.join(f'{k}={v}' for k, v in tuning.items() if v != default[k]) or 'default'
            for mode, fn in calls.items():
                ms, peak = time_cuda(fn, warmup, iters)
                report(rows, row(section='norm', model=f'layer_norm_2d {kind}', variant=name,
                                 mode=mode, dtype=dtype, batch=n, size=f'{channels}x{side}x{side}',
                                 ms=ms, gpu_ms=kernel_ms(fn), peak_mib=peak))
    NORM_TUNING.update(default)


def parse_modes(spec: str) -> tuple[str, ...]:
    """``'train'`` or ``'infer,train'`` -> the :data:`MODES` to measure (unknown: an error)."""
    modes = tuple(filter(None, spec.split(',')))
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        raise SystemExit(f'--modes: unknown or none {sorted(unknown)}; modes: {sorted(MODES)}')
    return modes


def compile_model(model: torch.nn.Module, name: str, mode: str | None = None):
    """``torch.compile`` as the goal measures it: VMamba with ``fullgraph=True`` (a graph
    break is an error), other models as they come; ``mode`` as torch.compile's (None: its
    default). Dynamo's caches are reset first, so models and modes do not share guards."""
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=name.startswith('vmamba_'), mode=mode)


def compiled_variant(mode: str | None) -> str:
    """The ``variant`` of a compiled row (and profile file): ``compiled`` or ``compiled_<mode>``."""
    return f'compiled_{mode}' if mode else 'compiled'


def bench_models(rows: list[dict], names: list[str], batch: int, warmup: int, iters: int,
                 compiled: bool, modes: tuple[str, ...] = tuple(MODES),
                 compile_mode: str | None = None) -> None:
    for name in names:
        torch.manual_seed(0)
        model = build_model(name).cuda()
        for mode in modes:
            dtype, dtype_name, make = MODES[mode]
            target = model
            compile_s = ''
            if compiled:
                target = compile_model(model, name, compile_mode)
            step = make(target, batch, 224, dtype)
            if compiled:
                torch.cuda.synchronize()
                start = time.perf_counter()
                step()
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - start
            ms, peak = time_cuda(step, warmup, iters)
            report(rows, row(section='compile' if compiled else 'models', model=name,
                             variant=compiled_variant(compile_mode) if compiled else 'eager',
                             mode=mode, dtype=dtype_name, batch=batch, size=224, ms=ms,
                             gpu_ms=kernel_ms(step), img_per_s=batch / ms * 1e3, peak_mib=peak,
                             compile_s=compile_s))
        del model
        torch.cuda.empty_cache()


def bench_resolution(rows: list[dict], names: list[str], warmup: int, iters: int) -> None:
    batch = 32
    for name in names:
        for size in RESOLUTIONS:
            try:
                model = build_model(name, size).cuda()
                ms, peak = time_cuda(inference_step(model, batch, size, torch.bfloat16),
                                     warmup, iters)
            except Exception as err:  # recorded loudly, the sweep goes on
                print(f'ERROR {name} at {size}: {err!r}', file=sys.stderr)  # noqa: T201
                report(rows, row(section='resolution', model=name, size=size, note=repr(err)))
                continue
            report(rows, row(section='resolution', model=name, variant='eager', mode='infer',
                             dtype='bf16', batch=batch, size=size, ms=ms,
                             img_per_s=batch / ms * 1e3, peak_mib=peak))
            del model
            torch.cuda.empty_cache()


#: Kernel categories of the profile summary: the first whose patterns one occurs in a kernel's
#: (lower-cased) name; 'other' if none does. Order matters (a bf16 copy is an elementwise
#: kernel, a convolution's implicit GEMM an xmma one).
KERNEL_CATEGORIES = (
    ('scan (fused core)', ('ss2d_scan',)),
    ('core layout (scan orders, merge, tiles)', ('_scan_orders', '_merge_orders',
                                                 '_copy_tiles')),
    ('layer norm', ('layer_norm', 'layernorm')),
    ('convolution', ('conv', 'fprop', 'dgrad', 'wgrad', 'convolve')),
    ('gemm', ('gemm', 'nvjet', 'cutlass', 'xmma', 'sm90_', 'sm80_')),
    ('inductor-generated', ('triton_',)),
    ('copy / cast', ('copy', 'memcpy')),
    ('reduction', ('reduce_kernel',)),
    ('elementwise', ('elementwise', 'memset')),
)


def kernel_category(name: str) -> str:
    """The :data:`KERNEL_CATEGORIES` entry a CUDA kernel's name falls in."""
    lowered = name.lower()
    for category, patterns in KERNEL_CATEGORIES:
        if any(p in lowered for p in patterns):
            return category
    return 'other'


def category_table(kernels: list[tuple], steps: int) -> str:
    """GPU time per step by kernel category: ``kernels`` are ``(name, self device time in us
    over steps, ...)`` (as :func:`kernel_list`'s); rows sorted by time, with their share of
    the total."""
    totals: dict[str, float] = {}
    for name, us, *_ in kernels:
        category = kernel_category(name)
        totals[category] = totals.get(category, 0.0) + us / steps / 1e3
    whole = sum(totals.values()) or 1.0
    lines = [f'{"category":<42} {"ms/step":>9} {"share":>7}']
    for category, ms in sorted(totals.items(), key=lambda item: -item[1]):
        lines.append(f'{category:<42} {ms:9.3f} {ms / whole:7.1%}')
    lines.append(f'{"total":<42} {whole:9.3f}')
    return '\n'.join(lines) + '\n'


def kernel_list(kernels: list[tuple[str, float, int]], steps: int, limit: int = 40) -> str:
    """The ``limit`` kernels with the most GPU time, by full name (the profiler's table cuts
    names, and ATen's elementwise kernels differ only past the cut): ``kernels`` are ``(name,
    self device time in us over steps, calls over steps)``; per step: ms and calls."""
    lines = [f'{"ms/step":>8} {"calls":>6}  kernel (full name)']
    for name, us, calls in sorted(kernels, key=lambda k: -k[1])[:limit]:
        lines.append(f'{us / steps / 1e3:8.3f} {calls / steps:6.1f}  {name}')
    return '\n'.join(lines) + '\n'


def profile_model(out_dir: str, name: str, batch: int, size: int = 224,
                  modes: tuple[str, ...] = ('infer', 'train'), compiled: bool = False,
                  compile_mode: str | None = None) -> None:
    """torch.profiler of one model (bf16 inference and/or fp16-AMP training, eager or under
    ``torch.compile``): GPU time per step by kernel category, then the top kernels."""
    torch.manual_seed(0)
    model = build_model(name, size).cuda()
    variant = compiled_variant(compile_mode) if compiled else 'eager'
    for mode in modes:
        dtype, _, make = MODES[mode]
        target = model
        if compiled:
            target = compile_model(model, name, compile_mode)
        step = make(target, batch, size, dtype)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        prof = profiled(step, 5)
        events = prof.key_averages()
        kernels = [(e.key, e.self_device_time_total, e.count) for e in events
                   if e.self_device_time_total > 0]
        table = (f'{name} {variant} {mode} {size}x{size} batch {batch}, GPU time per step by '
                 f'kernel category (5 steps):\n{category_table(kernels, 5)}\n')
        table += events.table(sort_by='self_device_time_total', row_limit=25,
                              max_name_column_width=70)
        table += f'\nkernels launched per iteration: {kernels_per_step(prof, 5):.0f}\n\n'
        table += kernel_list(kernels, 5)
        title = f'profile_{name}_{variant}_{mode}_{size}_b{batch}'
        with open(os.path.join(out_dir, f'{title}.txt'), 'w') as f:
            f.write(table)
        print(f'--- {title} ---\n{table}')  # noqa: T201
    del model
    torch.cuda.empty_cache()


def kernels_per_step(prof, steps: int) -> float:
    """Number of GPU kernels (and memcpy/memset) a profiled run launched per step."""
    return sum(e.count for e in prof.key_averages() if e.device_time_total > 0
               and e.self_device_time_total > 0) / steps


def host_time(step: Callable[[], object], steps: int, repeats: int = 5) -> float:
    """Milliseconds per step: the median over ``repeats`` runs of ``steps`` back-to-back
    steps, each synchronised once at its end.

    At a small batch every kernel finishes before the host issues the next one, so this is the
    host's time to issue a step (Python, autograd, dispatcher, kernel launches). The host's
    speed drifts within a call (one run of 20 training steps varied by 15% between
    measurements in session 11), hence the median.
    """
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) / steps * 1e3)
    return statistics.median(runs)


def bench_host_calls(rows: list[dict], steps: int) -> None:
    """Host time per call of single ops on tiny CUDA tensors (the GPU keeps up): an ATen add,
    a Triton copy launch, the fused SS2D core and the Triton LayerNorm, forward and
    forward+backward (what the eager step's host time is made of)."""
    from mmvmamba.ops.triton.layer_norm_2d import layer_norm_2d
    from mmvmamba.ops.triton.ss2d_core import ss2d_core_fused
    from mmvmamba.ops.triton.transpose import transpose_into

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, device='cuda') * scale + shift).requires_grad_(True)

    x = torch.randn(2, 96, 8, 8, device='cuda').contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    params = [leaf(4, 8, 96, scale=0.1), leaf(4, 96, 6, scale=0.4), leaf(4, 96, shift=-4),
              leaf(4 * 96, 1, scale=0.0), leaf(4 * 96), leaf(96), leaf(96, scale=0.0)]
    small = torch.randn(64, device='cuda')
    plane, plane_t = torch.randn(1, 1, 64, device='cuda'), torch.empty(1, 1, 64, device='cuda')
    norm_w, norm_b = params[5], params[6]

    def core_fwd():
        with torch.no_grad():
            ss2d_core_fused(x, *params)

    def core_fwd_bwd():
        ss2d_core_fused(x, *params).sum().backward()

    def norm_fwd_bwd():
        layer_norm_2d(x, norm_w, norm_b).sum().backward()

    calls = dict(aten_add=lambda: torch.add(small, small),
                 triton_transpose=lambda: transpose_into(plane, plane_t, 8, 8),
                 core_fwd=core_fwd, core_fwd_bwd=core_fwd_bwd,
                 layer_norm_2d_fwd_bwd=norm_fwd_bwd,
                 sum_backward=lambda: x.sum().backward())
    for name, fn in calls.items():
        ms = host_time(fn, steps * 10)
        report(rows, row(section='host', model=name, variant='eager', batch=2, ms=ms,
                         note='host time per call (sum_backward: the x.sum().backward() '
                         'every fwd_bwd row includes)'))


def write_host_ops(step: Callable[[], object], steps: int, path: str) -> None:
    """The host time of each ATen op and Python-level torch function over ``steps`` steps
    (``torch.profiler``, CPU activity only, sorted by self time): which ops the host's time
    per step is spent issuing."""
    prof = profiled(step, steps, activity='cpu')
    with open(path, 'w') as f:
        f.write(f'torch.profiler, CPU activity, {steps} steps\n')
        f.write(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=50))


def write_host_profile(step: Callable[[], object], steps: int, path: str, title: str) -> None:
    """A ``cProfile`` of ``steps`` steps: the top Python functions by own and by cumulative
    time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats('tottime').print_stats(45)
    stats.sort_stats('cumulative').print_stats(45)
    with open(path, 'w') as f:
        f.write(f'{title}\n{text.getvalue()}')


def bench_host(rows: list[dict], out_dir: str, names: list[str], batch: int, steps: int) -> None:
    """Host time per eager step of each model; cProfile and host-op table of VMamba-T's
    training steps."""
    bench_host_calls(rows, steps)
    for name in names:
        torch.manual_seed(0)
        model = build_model(name).cuda()
        for mode, (dtype, dtype_name, make) in MODES.items():
            step = make(model, batch, 224, dtype)
            ms = host_time(step, steps)
            report(rows, row(section='host', model=name, variant='eager', mode=mode,
                             dtype=dtype_name, batch=batch,
                             size=224, ms=ms, note='host time per step'))
            if name == 'vmamba_tiny' and mode == 'train':
                write_host_profile(step, steps,
                                   os.path.join(out_dir, f'host_profile_{name}_{mode}.txt'),
                                   f'cProfile of {steps} training steps, batch {batch}, 224')
                write_host_ops(step, steps, os.path.join(out_dir, f'host_ops_{name}_{mode}.txt'))
        del model
        torch.cuda.empty_cache()


def environment() -> dict:
    import triton

    env = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
               cuda=torch.version.cuda, triton=triton.__version__, python=platform.python_version(),
               cudnn=torch.backends.cudnn.version(), date=time.strftime('%Y-%m-%d %H:%M:%S'))
    try:
        import timm
        env['timm'] = timm.__version__
    except ImportError:
        env['timm'] = 'not installed'
    return env


def plot(rows: list[dict], path: str, device: str) -> None:
    """Bars of 224x224 throughput (models/compile rows) and, when the resolution sweep ran,
    throughput and peak memory against input size; only the panels that have data."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    at_224 = [r for r in rows if r['section'] in ('models', 'compile')]
    resolution = [r for r in rows if r['section'] == 'resolution' and r['img_per_s'] != '']
    panels = (['infer', 'train'] if at_224 else []) + (['res_speed', 'res_memory']
                                                       if resolution else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel in ('infer', 'train'):
            picked = [r for r in at_224 if r['mode'] == panel]
            labels = [f"{r['model']}\n{r['variant']}" for r in picked]
            ax.bar(range(len(picked)), [r['img_per_s'] for r in picked])
            ax.set_xticks(range(len(picked)), labels, rotation=60, fontsize=7)
            what = 'bf16 inference' if panel == 'infer' else 'fp16-AMP training'
            ax.set_title(f'{what}, 224x224, img/s ({device})', fontsize=9)
            continue
        key, what = (('img_per_s', 'img/s') if panel == 'res_speed' else
                     ('peak_mib', 'peak memory, MiB'))
        for name in sorted({r['model'] for r in resolution}):
            pts = [(r['size'], r[key]) for r in resolution if r['model'] == name]
            ax.plot(*zip(*pts), marker='o', label=name)
        ax.set_yscale('log')
        ax.set_xlabel('input size (square)')
        ax.set_title(f'bf16 inference, batch 32, {what} ({device})', fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sections', default='core,models')
    parser.add_argument('--out', default='work_dirs/benchmark')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--models', default='vmamba_tiny,vmamba_small,vmamba_base,'
                        'swin_tiny_patch4_window7_224,convnext_tiny')
    parser.add_argument('--compile-models', default='vmamba_tiny')
    parser.add_argument('--compile-mode', default=None,
                        help="torch.compile's mode for the compile section and a compiled "
                        "profile, e.g. max-autotune-no-cudagraphs (default: its default)")
    parser.add_argument('--modes', default='infer,train',
                        help='the modes the models and compile sections measure')
    parser.add_argument('--resolution-models',
                        default='vmamba_tiny,swin_tiny_patch4_window7_224,convnext_tiny')
    parser.add_argument('--core-backends', default='fused')
    parser.add_argument('--core-arch', default='tiny',
                        help="the core section's shapes: 'tiny' (VMamba-T's stages and the "
                        "detection shape) or another arch's stages ('small', 'base')")
    parser.add_argument('--core-batch', type=int, default=32,
                        help="the core section's batch (other than 32, 'tiny' means its four "
                        "stage shapes without the detection shape)")
    parser.add_argument('--core-tunings', default='',
                        help='fused-scan tunings to sweep: '
                        'block_d:block_l:warps:bwd_block_d:bwd_warps:min_programs'
                        '[:dt_dot[:rank_block[:stages]]],...')
    parser.add_argument('--norm-arch', default='small',
                        help='the VMamba arch whose stage shapes the norm section measures')
    parser.add_argument('--norm-tunings', default='default',
                        help="NORM_TUNING variants, '/' between them: "
                        "'default/tile_elements=8192,bwd_warps=8'")
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--profile-size', type=int, default=224,
                        help='input size of the profile section (default: 224)')
    parser.add_argument('--profile-modes', default='infer,train',
                        help='what the profile section records: infer, train or both')
    parser.add_argument('--profile-models', default='vmamba_tiny',
                        help='models the profile section records (comma separated)')
    parser.add_argument('--profile-compiled', action='store_true',
                        help='profile the models under torch.compile (VMamba: fullgraph)')
    parser.add_argument('--host-models', default='vmamba_tiny,swin_tiny_patch4_window7_224')
    parser.add_argument('--host-batch', type=int, default=2)
    parser.add_argument('--host-steps', type=int, default=20)
    parser.add_argument('--scan-tuning', default='',
                        help='fused-scan knobs for every section, e.g. rank_block=8,stages=3 (see '
                        'SCAN_TUNING; recorded in the environment JSON)')
    parser.add_argument('--cpp-passes', default='',
                        help='which Triton ops issue their eager passes from C++, e.g. '
                        'ss2d_core=1,layer_norm_2d=0 (see host.CPP_PASSES; recorded in the '
                        'environment JSON)')
    args = parser.parse_args()
    modes = parse_modes(args.modes)
    if not torch.cuda.is_available():
        raise SystemExit('benchmark.py needs a CUDA device')
    torch.backends.cudnn.benchmark = False
    os.makedirs(args.out, exist_ok=True)
    env = environment()
    env['scan_tuning'] = apply_scan_tuning(args.scan_tuning)
    env['cpp_passes'] = apply_cpp_passes(args.cpp_passes)
    env['compile_mode'] = args.compile_mode or 'default'
    print(json.dumps(env))  # noqa: T201 (CLI output)
    sections = args.sections.split(',')
    tag = '_'.join(s for s in sections if s != 'profile') or 'profile'
    csv_path = os.path.join(args.out, f'benchmark_{tag}.csv')
    if os.path.exists(csv_path):
        os.remove(csv_path)
    LIVE_CSV.append(csv_path)
    rows: list[dict] = []
    if 'core' in sections:
        bench_core(rows, args.core_backends.split(','), args.warmup, args.iters,
                   parse_tunings(args.core_tunings), core_shapes(args.core_arch, args.core_batch))
    if 'norm' in sections:
        bench_norm(rows, args.norm_arch, args.batch, args.warmup, args.iters,
                   parse_norm_tunings(args.norm_tunings))
    if 'models' in sections:
        bench_models(rows, args.models.split(','), args.batch, args.warmup, args.iters, False,
                     modes)
    if 'resolution' in sections:
        bench_resolution(rows, args.resolution_models.split(','), max(3, args.warmup // 2),
                         max(10, args.iters // 2))
    if 'compile' in sections:
        bench_models(rows, args.compile_models.split(','), args.batch, args.warmup, args.iters,
                     True, modes, args.compile_mode)
    if 'host' in sections:
        bench_host(rows, args.out, args.host_models.split(','), args.host_batch, args.host_steps)
    if 'profile' in sections:
        for name in args.profile_models.split(','):
            profile_model(args.out, name, args.batch, args.profile_size,
                          tuple(args.profile_modes.split(',')), args.profile_compiled,
                          args.compile_mode)
    with open(os.path.join(args.out, f'environment_{tag}.json'), 'w') as f:
        json.dump(env, f, indent=1)
    if any(r['section'] in ('models', 'compile', 'resolution') for r in rows):
        plot(rows, os.path.join(args.out, f'benchmark_{tag}.png'), env['device'])


if __name__ == '__main__':
    main()
