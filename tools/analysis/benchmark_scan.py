# ruff: noqa: T201  (a command-line tool: its table goes to stdout)
"""Time the selective scan per backend: forward and forward+backward, at VMamba's stage shapes.

Examples::

    python tools/analysis/benchmark_scan.py                       # CPU, fp32, the issue's shape
    python tools/analysis/benchmark_scan.py --device cuda --dtype bf16 --preset vmamba-t-b32
    python tools/analysis/benchmark_scan.py --shape 1 384 3136 --backends compiled reference

Shapes are ``(batch, K*Cg, L)`` with K = 4 groups and state size N = 1 unless given. Inputs are
``torch.randn`` (delta scaled down, A negative); u, delta, B, C in ``--dtype``; A, D, delta_bias
fp32; output fp32. Times are medians over ``--iters`` runs after ``--warmup`` runs (CUDA events
on GPU, ``time.perf_counter`` on CPU). "fwd+bwd" runs the forward and ``backward`` of the summed
output weighted by a fixed random tensor, gradients for u, delta, A, B, C, D and delta_bias.
"""
import argparse
import json
import statistics
import time

import torch

from mmvmamba import ops

PRESETS = {
    # The CPU target of issue 4.
    'issue-cpu': [(1, 384, 3136)],
    # VMamba-T stage shapes at 224 (Din = C, L = H*W): batch 1, for CPU.
    'vmamba-t-b1': [(1, 384, 3136), (1, 768, 784), (1, 1536, 196), (1, 3072, 49)],
    # The H100 anchors of issue 4 (batch 32 stages, and a 200x320 map at batch 2).
    'vmamba-t-b32': [(32, 384, 3136), (32, 768, 784), (32, 1536, 196), (32, 3072, 49),
                     (2, 384, 64000)],
}
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def make_inputs(shape, groups, state, dtype, device, requires_grad):
    batch, channels, length = shape
    gen = torch.Generator().manual_seed(0)

    def randn(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale)

    args = dict(
        u=randn(batch, channels, length).to(device, dtype),
        delta=randn(batch, channels, length, scale=0.5).to(device, dtype),
        A=(-torch.rand(channels, state, generator=gen) - 0.1).to(device),
        B=randn(batch, groups, state, length).to(device, dtype),
        C=randn(batch, groups, state, length).to(device, dtype),
        D=randn(channels).to(device),
        delta_bias=randn(channels, scale=0.5).to(device))
    if requires_grad:
        for value in args.values():
            value.requires_grad_(True)
    return args


class Timer:
    """(median, min) wall time in ms of a callable, synchronised on CUDA."""

    def __init__(self, device, warmup, iters):
        self.device, self.warmup, self.iters = device, warmup, iters

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        times = []
        if self.device.type == 'cuda':
            for _ in range(self.iters):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        else:
            for _ in range(self.iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), min(times)


def bench_backend(name, shape, args_ns, device, timer):
    dtype = DTYPES[args_ns.dtype]
    fwd_in = make_inputs(shape, args_ns.groups, args_ns.state, dtype, device, False)
    train_in = make_inputs(shape, args_ns.groups, args_ns.state, dtype, device, True)
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)

    def forward():
        with torch.no_grad():
            ops.selective_scan(**fwd_in, backend=name)

    def forward_backward():
        out = ops.selective_scan(**train_in, backend=name)
        out.backward(weight)
        for value in train_in.values():
            value.grad = None

    if args_ns.profile:
        for what, fn in (('fwd', forward), ('fwd+bwd', forward_backward)):
            print_kernel_profile(f'{tuple(shape)} {name} {what}', fn, device)
    return timer(forward), (timer(forward_backward) if not args_ns.forward_only else None)


def print_kernel_profile(title, fn, device, calls=5):
    """Per-kernel device time (us per call) and host time per call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()  # host time per call: the launches alone, before any sync
    for _ in range(calls):
        fn()
    host_ms = (time.perf_counter() - t0) * 1e3 / calls
    if device.type == 'cuda':
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    kernels.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in kernels) / calls
    print(f'  profile {title}: host {host_ms * 1e3:.0f} us/call (no sync), '
          f'device {total:.0f} us/call in {sum(e.count for e in kernels) // calls} kernels')
    for e in kernels[:8]:
        print(f'    {e.self_device_time_total / calls:9.1f} us  x{e.count // calls:<3} '
              f'{e.key[:90]}')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default: cpu)")
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES),
                        help='dtype of u, delta, B, C (default: fp32)')
    parser.add_argument('--preset', default=None, choices=sorted(PRESETS),
                        help='named shape list (default: issue-cpu on CPU, vmamba-t-b32 on CUDA)')
    parser.add_argument('--shape', type=int, nargs=3, action='append', metavar=('B', 'KCg', 'L'),
                        help='a (batch, K*Cg, L) shape; repeatable; overrides --preset')
    parser.add_argument('--groups', type=int, default=4, help='K (default: 4)')
    parser.add_argument('--state', type=int, default=1, help='N (default: 1)')
    parser.add_argument('--backends', nargs='+', default=None,
                        help='backends to time (default: every one available on the device)')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--forward-only', action='store_true')
    parser.add_argument('--json', default=None, help='also write the rows to this JSON file')
    parser.add_argument('--profile', action='store_true',
                        help='also print, per shape and backend, the GPU time of each kernel '
                        '(torch.profiler, 5 calls of the forward and of forward+backward)')
    return parser.parse_args()


def main():
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shape or PRESETS[args.preset or
                                   ('vmamba-t-b32' if device.type == 'cuda' else 'issue-cpu')]
    availability = ops.dispatch.available_backends('selective_scan', device)
    backends = args.backends or [name for name, (ok, _) in availability.items() if ok]
    for name in backends:
        ok, reason = availability.get(name, (False, 'not registered'))
        if not ok:
            raise SystemExit(f'backend {name!r} is unavailable on {device}: {reason}')
    timer = Timer(device, args.warmup, args.iters)
    if device.type == 'cuda':
        where = torch.cuda.get_device_name(device)
    else:
        where = f'CPU, {torch.get_num_threads()} threads'
    print(f'selective_scan benchmark: device {where}; torch {torch.__version__}; '
          f'dtype {args.dtype} in / fp32 out; K={args.groups}, N={args.state}; '
          f'median (and min) of {args.iters} after {args.warmup} warm-up; times in ms')
    header = (f"{'shape (B, K*Cg, L)':<22}{'backend':<12}{'fwd':>10}{'fwd+bwd':>10}"
              f"{'fwd min':>10}{'f+b min':>10}")
    print(header)
    print('-' * len(header))
    rows = []
    for shape in shapes:
        for name in backends:
            (fwd, fwd_min), train = bench_backend(name, tuple(shape), args, device, timer)
            train, train_min = train if train is not None else (None, None)

            def cell(value):
                return f'{value:10.3f}' if value is not None else f"{'-':>10}"

            print(f'{str(tuple(shape)):<22}{name:<12}{cell(fwd)}{cell(train)}{cell(fwd_min)}'
                  f'{cell(train_min)}')
            rows.append(dict(shape=list(shape), backend=name, fwd_ms=fwd, fwd_bwd_ms=train,
                             fwd_min_ms=fwd_min, fwd_bwd_min_ms=train_min, device=where,
                             dtype=args.dtype, groups=args.groups, state=args.state))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
