"""Registers, spills and SASS instruction mix of the fused SS2D scan kernels (or, with
``--norm``, the LayerNorm2d kernels), without a GPU.

Triton compiles for a named target (sm_90 by default) on any machine; the ptxas / cuobjdump it
ships report each kernel's registers and stack (spill) bytes and disassemble it. Use it to
check a kernel change before spending device time (``docs/benchmarks.md`` lists past results).

Example::

    python tools/analysis/triton_resources.py --block-d 4 --block-l 64 --rank 6 --warps 2
    python tools/analysis/triton_resources.py --norm core_out --channels 768 --positions 4 \
        --warps 4 --bwd-blocks 1
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mmvmamba.ops.triton.layer_norm_2d_kernels import (
    layer_norm_2d_bwd_kernel,
    layer_norm_2d_fwd_kernel,
)
from mmvmamba.ops.triton.ss2d_scan import ss2d_scan_bwd_kernel, ss2d_scan_fwd_kernel

HALF_POINTERS = ('xs_ptr', 'proj_ptr', 'gz_ptr')  # the scan kernels' maps in x's dtype

#: The LayerNorm2d's two uses: the blocks' norms (bf16 maps, channels-last: channel stride 1)
#: and the fused core's output norm (its fp32 merged map, positions contiguous in rows padded
#: to 16; the output gradient bf16 channels-last). Per use: pointer dtypes, the strides
#: that are 1 (Triton specialises them), and the ints a launch finds 16-divisible (at
#: VMamba's channel counts; L = H*W is left unspecialised).
NORM_USES = {
    'block': (dict(x_ptr='bf16', out_ptr='bf16', gout_ptr='bf16', gx_ptr='bf16'),
              ('x_sc', 'o_sc', 'g_sc', 'gx_sc'),
              ('C', 'x_sb', 'x_sl', 'o_sb', 'o_sl', 'g_sb', 'g_sl', 'gx_sb', 'gx_sl')),
    'core_out': (dict(out_ptr='bf16', gout_ptr='bf16'), ('x_sl', 'o_sc', 'g_sc', 'gx_sl'),
                 ('C', 'x_sb', 'x_sc', 'o_sb', 'o_sl', 'g_sb', 'g_sl', 'gx_sb', 'gx_sc')),
}


def check_pointer_names(kernels: tuple, names) -> None:
    """Fail if a pointer this tool types is a parameter of none of ``kernels`` (a renamed
    parameter would silently compile as fp32)."""
    params = {param.name for kernel in kernels for param in kernel.params}
    unknown = sorted(set(names) - params)
    if unknown:
        raise ValueError(f'no parameter {unknown} in {[k.fn.__name__ for k in kernels]}: update '
                         f'the pointer dtypes of triton_resources.py to {sorted(params)}')


def inspect(kernel, constexprs: dict, args: argparse.Namespace, pointer_dtypes: dict,
            ones: tuple = (), divisible: tuple = ()) -> str:
    """Compile ``kernel`` for the target; its argument types come from its own parameter list:
    ``*_ptr`` are pointers (in ``pointer_dtypes``, else fp32), the parameters in ``ones`` the
    constant 1, ``eps`` fp32, other non-constexpr parameters int32 (those in ``divisible``
    16-divisible, as a launch specialises them; pointers from torch allocations always are).
    Also reports the layout of a scan's tiles where the kernel scans (see ``ss2d_scan``:
    consecutive steps per lane, a row within one warp, is the fast one)."""
    signature = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr or name in ones:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr'):
            signature[name] = '*' + pointer_dtypes.get(name, 'fp32')
        else:
            signature[name] = 'fp32' if name == 'eps' else 'i32'
    aligned = {(i, ): [['tt.divisibility', 16]] for i, param in enumerate(kernel.params)
               if param.name.endswith('_ptr') or param.name in divisible}
    constexprs = dict(constexprs, **{name: 1 for name in ones if name in signature})
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                                        attrs=aligned),
                              target=GPUTarget('cuda', args.arch, 32),
                              options=dict(num_warps=args.warps))
    tools = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    with tempfile.NamedTemporaryFile(suffix='.cubin') as cubin:
        cubin.write(compiled.asm['cubin'])
        cubin.flush()
        usage = subprocess.run([os.path.join(tools, 'cuobjdump'), '--dump-resource-usage',
                                cubin.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(tools, 'cuobjdump'), '-sass', cubin.name],
                              capture_output=True, text=True, check=True).stdout
    resources = re.search(r'REG:(\d+) STACK:(\d+)', usage)
    ops = re.findall(r'^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)', sass, re.M)
    mix = collections.Counter(ops).most_common(args.top)
    ttgir = compiled.asm['ttgir']
    layouts = dict(re.findall(r'^(#blocked\d*) = #ttg\.blocked<\{(sizePerThread = [^,]+, [^,]+, '
                              r'threadsPerWarp = [^,]+, [^,]+, warpsPerCTA = [^,]+, [^,]+),', ttgir,
                              re.M))
    scan = re.search(r'"tt\.scan".*?tensor<\d+x\d+xf32, (#blocked\d*)>', ttgir, re.S)
    converts = len(re.findall(r'ttg\.convert_layout %\S+ : tensor<\d+x\d+x', ttgir))
    barriers = sum(op in ('BAR', 'BAR.SYNC') for op in ops)
    return (f'registers {resources.group(1)}, stack {resources.group(2)} B, '
            f'{len(ops)} instructions: ' + ', '.join(f'{op} {n}' for op, n in mix)
            + (f'; scan layout {layouts.get(scan.group(1)) if scan else "?"}' if 'tt.scan' in ttgir
               else '')
            + f'; {converts} tile layout conversions, {barriers} barriers')


def inspect_norm(args: argparse.Namespace) -> None:
    """The LayerNorm2d kernels at ``--channels`` (padded to a power of two) x ``--positions``
    per tile, for the use ``--norm``."""
    pointer_dtypes, ones, divisible = NORM_USES[args.norm]
    check_pointer_names((layer_norm_2d_fwd_kernel, layer_norm_2d_bwd_kernel), pointer_dtypes)
    base = dict(BC=triton.next_power_of_2(args.channels), BP=args.positions, HAS_WEIGHT=True)
    kernels = (('fwd', layer_norm_2d_fwd_kernel, dict(base, HAS_BIAS=True)),
               ('bwd', layer_norm_2d_bwd_kernel, dict(base, PB=args.bwd_blocks)))
    for name, kernel, constexprs in kernels:
        report = inspect(kernel, constexprs, args, pointer_dtypes, ones, divisible)
        print(f'{args.norm} {name}: {report}')  # noqa: T201 (CLI)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--block-d', type=int, default=4)
    parser.add_argument('--block-l', type=int, default=64)
    parser.add_argument('--rank', type=int, default=6, help='dt rank R')
    parser.add_argument('--warps', type=int, default=2)
    parser.add_argument('--dt-dot', action='store_true')
    parser.add_argument('--rank-block', type=int, default=0,
                        help='dt_low rows unrolled per step of the rank loop (0: all R)')
    parser.add_argument('--stages', type=int, default=1,
                        help='software pipelining depth of the chunk loops (1: none)')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--norm', choices=sorted(NORM_USES),
                        help='inspect the LayerNorm2d kernels for this use instead of the scan')
    parser.add_argument('--channels', type=int, default=96, help='--norm: channels C')
    parser.add_argument('--positions', type=int, default=32,
                        help='--norm: positions per tile (BP)')
    parser.add_argument('--bwd-blocks', type=int, default=1,
                        help="--norm: tiles per backward program (NORM_TUNING['bwd_blocks'])")
    parser.add_argument('--arch', type=int, default=90)
    parser.add_argument('--top', type=int, default=10, help='instruction kinds shown')
    args = parser.parse_args()
    if args.norm:
        inspect_norm(args)
        return
    base = dict(R=args.rank, RP=max(16, triton.next_power_of_2(args.rank)), BD=args.block_d,
                BL=args.block_l, DT_DOT=args.dt_dot, RB=args.rank_block,
                NS=args.stages)
    check_pointer_names((ss2d_scan_fwd_kernel, ss2d_scan_bwd_kernel), HALF_POINTERS)
    variants = (('', dict(SUMMARY=False, PAIRED=0)),
                (' summary', dict(SUMMARY=True, PAIRED=0)),
                (' paired', dict(SUMMARY=False, PAIRED=1)),
                (' split pair 1/2', dict(SUMMARY=False, PAIRED=2)),
                (' split pair 2/2', dict(SUMMARY=False, PAIRED=3)))
    for name, kernel in (('fwd', ss2d_scan_fwd_kernel), ('bwd', ss2d_scan_bwd_kernel)):
        for label, flags in variants:
            # Pointers in --dtype where the activation's dtype applies; the row stride S is
            # 16-divisible by construction; L is left unspecialised (196, 49, ...).
            report = inspect(kernel, dict(base, **flags), args,
                             dict.fromkeys(HALF_POINTERS, args.dtype), divisible=('S', ))
            print(f'{name}{label}: {report}')  # noqa: T201 (CLI)


if __name__ == '__main__':
    main()
