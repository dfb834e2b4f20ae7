"""Prototype for issue 6's compiled inference (session 20): the MLP's ``fc1`` and its exact
GELU as one Triton GEMM with the GELU in the epilogue, against cuBLAS ``fc1`` followed by a
separate GELU kernel (what eager mode and inductor's default mode run), at VMamba-T's four MLP
shapes at batch 128 in bf16 (``M = 128 * side**2`` positions, ``K = dim``, ``N = 4 * dim``).

On the GPU machine, from the repository root: ``python3 docs/wip/gpu/linear_gelu.py`` prints
one line per shape (median ms of eager linear + gelu, of the two under ``torch.compile``'s
default mode, and of the fused kernel at each launch shape, with the fused result's largest
error against the fp32 reference). ``TRITON_INTERPRET=1 python3 docs/wip/gpu/linear_gelu.py
--check`` compares the kernel with the reference on small odd shapes under Triton's
interpreter (no GPU).
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

#: (BM, BN, BK, warps, stages) tried per shape on the GPU.
LAUNCH_SHAPES = ((128, 128, 32, 4, 4), (128, 128, 64, 4, 3), (128, 256, 64, 8, 3),
                 (256, 128, 64, 8, 3), (64, 128, 32, 4, 4), (128, 64, 64, 4, 4))
#: VMamba-T's (dim, side) per stage at 224.
STAGES = ((96, 56), (192, 28), (384, 14), (768, 7))


@triton.jit
def linear_gelu_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, BM: tl.constexpr,
                       BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    """``out (M, N) = gelu(x (M, K) @ w (N, K)^T + b (N))``, all row-major, fp32 accumulation,
    the exact (erf) GELU; programs grouped ``GROUP_M`` row blocks at a time so that
    neighbouring programs share x's rows."""
    pid = tl.program_id(0)
    row_blocks = tl.cdiv(M, BM)
    col_blocks = tl.cdiv(N, BN)
    per_group = GROUP_M * col_blocks
    first_row = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(row_blocks - first_row, GROUP_M)
    row_block = first_row + (pid % per_group) % group_rows
    col_block = (pid % per_group) // group_rows
    rows = row_block * BM + tl.arange(0, BM)
    cols = col_block * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        k_ok = (k0 + ks) < K
        a = tl.load(x_ptr + rows[:, None].to(tl.int64) * K + (k0 + ks)[None, :],
                    mask=(rows < M)[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * K + (k0 + ks)[:, None],
                    mask=(cols < N)[None, :] & k_ok[:, None], other=0.0)
        acc = tl.dot(a, w, acc)
    acc += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    out = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    tl.store(out_ptr + rows[:, None].to(tl.int64) * N + cols[None, :],
             out.to(out_ptr.dtype.element_ty), mask=(rows < M)[:, None] & (cols < N)[None, :])


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                shape: tuple = LAUNCH_SHAPES[0]) -> torch.Tensor:
    """``gelu(F.linear(x, weight, bias))`` for a row-major ``x (M, K)``, in ``x.dtype``."""
    bm, bn, bk, warps, stages = shape
    m, k = x.shape
    n = weight.shape[0]
    out = x.new_empty(m, n)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), )
    linear_gelu_kernel[grid](x, weight.contiguous(), bias, out, m, n, k, BM=bm, BN=bn, BK=bk,
                             GROUP_M=8, num_warps=warps, num_stages=stages)
    return out


def reference(x, weight, bias):
    return F.gelu(F.linear(x.float(), weight.float(), bias.float()))


def check() -> None:
    """Odd shapes (masked edges in every dimension) under the interpreter, fp32 and fp16:
    its ``tl.dot`` of two bf16 tiles returns garbage (Triton 3.8's, on the CPU machine, on a
    16 x 16 product), so bf16 is checked on the GPU (the error column of :func:`bench`)."""
    torch.manual_seed(0)
    for m, k, n, dtype in ((37, 20, 44, torch.float32), (70, 33, 17, torch.float16)):
        x = torch.randn(m, k, dtype=dtype)
        w = torch.randn(n, k, dtype=dtype) / k**0.5
        b = torch.randn(n, dtype=dtype)
        got = linear_gelu(x, w, b, (32, 32, 16, 4, 1)).float()
        want = reference(x, w, b)
        err = ((got - want).norm() / want.norm()).item()
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert err < tol, (m, k, n, dtype, err)
        print(f'{m}x{k}x{n} {dtype}: relative error {err:.2e}')  # noqa: T201 (CLI output)


def median_ms(fn, warmup: int = 10, iters: int = 30) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench() -> None:
    torch.manual_seed(0)
    eager = lambda x, w, b: F.gelu(F.linear(x, w, b))  # noqa: E731
    compiled = torch.compile(eager)
    for dim, side in STAGES:
        m, k, n = 128 * side * side, dim, 4 * dim
        x = torch.randn(m, k, device='cuda', dtype=torch.bfloat16)
        w = torch.randn(n, k, device='cuda', dtype=torch.bfloat16) / k**0.5
        b = torch.randn(n, device='cuda', dtype=torch.bfloat16)
        want = reference(x, w, b)
        eager_ms = median_ms(lambda: eager(x, w, b))  # noqa: B023 (used at once)
        compiled_ms = median_ms(lambda: compiled(x, w, b))  # noqa: B023
        line = f'M={m} K={k} N={n}: eager {eager_ms:.3f} ms, compiled {compiled_ms:.3f} ms, fused'
        for shape in LAUNCH_SHAPES:
            got = linear_gelu(x, w, b, shape)
            err = (got.float() - want).abs().max().item()
            ms = median_ms(lambda: linear_gelu(x, w, b, shape))  # noqa: B023 (used at once)
            line += f' {"x".join(map(str, shape))} {ms:.3f} (err {err:.1e})'
        print(line, flush=True)  # noqa: T201 (CLI output)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--check', action='store_true')
    args = parser.parse_args()
    check() if args.check else bench()
