"""The fused SS2D core (N = 1): forward, backward, and their autograd wrappers (torch custom ops
for ``torch.compile``, a plain ``autograd.Function`` in eager mode).

Forward, for ``x (B, D, H, W)`` after the depthwise conv and SiLU, channels-last (as the
backbone hands it over) or any other layout:

1. ``xs``: the map as a pair ``(2, D, B, S)`` of channel-major maps in row-major
   (``xs[0]``) and column-major (``xs[1]``) position order, ``L = H*W`` positions per image
   and the image stride ``S`` rounded up to a multiple of 16 (one Triton copy), so that every
   scan direction reads and writes contiguous, aligned rows (see ``ss2d_scan``). Every map of
   positions below has the same image stride. The maps the GEMMs read and write are
   image-minor (``(..., rows, B, S)``): one scan order's product over all images is then one
   matrix product, ``(rows, D) @ (D, B*S)``, with no per-image weights. The padding columns
   of ``xs`` are zeroed, so those of ``proj`` are zero too; the backward's weight-gradient
   GEMMs sum over all ``B*S`` columns (an aligned length; see :func:`_backward`).
2. ``proj``: the x projection, position-wise, so no cross-scan copy is needed before it: one
   batched GEMM over the two orders, ``(4, R+2, B, S)`` with each direction in its own order
   (slots of ``ss2d_scan.SLOT_DIRECTION``).
3. :func:`~.ss2d_scan.ss2d_scan_fwd_kernel`: per (channel block, image, direction) the dt
   projection, bias, softplus and the fp32 recurrence in registers, added into the fp32 maps
   ``y`` (row-major directions) and ``yt`` (column-major ones); ``yt`` is then added
   transposed into ``y``, the merged map (saved, with the states entering each chunk).
4. The channel-first output LayerNorm on ``y``, cast to ``x.dtype`` and written in ``x``'s
   layout; the backward returns the input gradient in that layout too.

The backward recomputes every scan state from the saved chunk-entry states, so nothing of size
``4 x (B, D, L)`` is stored. Under ``torch.compile`` both passes run as custom ops with fake
implementations, so ``torch.compile(fullgraph=True)`` traces through them; eager mode calls the
same two functions through a plain ``autograd.Function``, which costs less host time per call.

The eager training step at batch 128 is bound by the host's time to issue it (every torch call
and launch here runs once per block per step), so both passes keep their torch calls few:
pairs of maps in one allocation, the parameters handed to the kernels as they are, autocast
switched off by a flag flip (``ops.amp.autocast_off``; the GEMMs run in the map's dtype,
accumulating in fp32) rather than ``torch.autocast`` (``tools/analysis/count_host_ops.py``
counts them): each projection GEMM, input or weight gradient is one ``bmm`` over the scan
orders or slots, whatever the batch.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from ..amp import autocast_off
from .host import cpp_ops_for
from .launch import cdiv, launch, next_power_of_2
from .layer_norm_2d import ln2d_backward, ln2d_forward
from .ss2d_scan import ss2d_scan_bwd_kernel, ss2d_scan_fwd_kernel
from .transpose import dense_2d, flat, merge_orders_into, scan_orders_into, transpose_into

__all__ = ['ss2d_core_fused', 'ss2d_core_cpp', 'scan_config', 'SCAN_TUNING']

DIRECTIONS = 4


#: Tuning knobs of the scan kernels (tests and benchmarks may change them): channels per
#: program of the forward and of the backward kernel (each halved, down to 4, or 16 with
#: ``dt_dot``, while its grid has fewer than ``min_programs`` programs), steps per chunk (shared:
#: the backward restarts from the forward's chunk-entry states), warps per program of each; a
#: grid still too small is split into segments along the scan. ``dt_dot`` computes the dt
#: projection with a tensor-core dot instead of unrolled FMAs (see
#: :func:`~.ss2d_scan._dt_projection`); ``rank_block`` (0: all) is how many of its ``R`` rows
#: the FMA form unrolls per step of a loop over the rank (its registers grow with the rows
#: unrolled); ``stages`` (1: none) is the software pipelining depth of the kernels' loops over
#: the chunks (``tl.range(num_stages=...)``: the next chunks' loads issued, through
#: asynchronous copies, while the current one is scanned), used only for grids of at most
#: ``pipeline_max_programs`` programs (counted as channel blocks x images x 4 directions x
#: segments): few programs per SM leave the loads' latency exposed, many hide it and lose
#: occupancy to the extra registers. ``pair_max_length``: scans of at
#: most this many steps in one segment run directions k and k+2 in one program (no atomics,
#: half the programs); on an H100 that won 2-3% at 224 / batch 128 and lost 5-6% at 384-1024 /
#: batch 32, where the longer sequential walk and re-reading the merged map from HBM cost more.
#: ``fwd_dot_min_rank`` (0: never): from this dt rank up the forward kernel alone takes the
#: tensor-core dt projection, with :data:`FWD_DOT_TILE`'s channels and warps (the backward
#: keeps the FMA form, which was faster at every rank measured). Default 24 (VMamba-T/S's
#: stages 3-4, -B's 3-4 at rank 32/64) from session 15, runs 66-67 (H100): the batch-32 core
#: forward at those stages 9-25% faster by kernel time, none slower; VMamba-B bf16 inference
#: 1875 -> 2220 img/s, training 629 -> 664, VMamba-T 6227 -> 6557 and 1976 -> 2061 (batch 128,
#: alternating in one call).
#: ``split_pair_min_rank`` (0: never): a paired scan of dt rank at least this runs as two
#: launches, directions 0-1 storing and then 2-3 adding, instead of one program walking both
#: in turn: one direction per program takes fewer registers (sm_90, fp16, paired backward at
#: R = 6 / 8 / 12: 96 / 96 / 110 -> 80; forward 62 / 70 / 80 -> 60 / 64 / 72; at R >= 24 the
#: backward's first launch takes 96 against 88; ``tools/analysis/triton_resources.py``), at
#: the cost of twice the programs, each half as long. Default 48 from session 20, run 104
#: (H100, kernel time, splitting at every rank against none): VMamba-T's stage 4 (R = 48)
#: core forward+backward 0.420 -> 0.402 ms at batch 32 and 1.444 -> 1.350 at batch 128, its
#: forward 0.581 -> 0.490 at batch 128; stage 3 (R = 24) forward slower (0.607 -> 0.672 at
#: batch 128), stages 1-2 within +-1.5%.
#:
#: Defaults: the fastest by kernel time (profiler) of a sweep at VMamba-T's batch-128 stage
#: shapes on an H100 (docs/benchmarks.md, session 9, run 38): 4 channels x 64 steps, 2 warps,
#: for both kernels (stage 4, 768 channels, was 7% faster with 8 channels in the backward).
#: Session 13, run 52 (kernel time, H100): ``rank_block=8`` took the batch-32 core
#: forward+backward at stages 3-4 (R = 24, 48) from 0.69 / 0.68 to 0.61 / 0.60 ms and the
#: VMamba-T training step's GPU time from 64.8 to 61.6 ms (stages 1-2 within +-4%);
#: ``stages=3`` took the detection shape (2 x 96 x 200 x 320, 576 programs) from 3.03 to
#: 2.41 ms but the batch-32 stage shapes (3072-24576 programs) up by as much as 23%, hence
#: the grid bound. Session 20, run 104 (kernel time, H100): ``min_programs`` 512 -> 2048 with
#: ``pipeline_max_programs`` 1024 -> 2500 (the detection shape in 11 segments, 2112 programs,
#: still pipelined) took its core forward+backward from 2.240 to 1.853 ms and its forward
#: from 0.855 to 0.688; VMamba-T's stage shapes at batch 32 and 128 (3072 programs and up,
#: unchanged configurations) within +-0.6%. Grids of 512-2047 programs (e.g. stage 1 at batch
#: 8-16) now run in segments where they were paired: not yet timed.
SCAN_TUNING = dict(block_d=4, block_l=64, num_warps=2, bwd_block_d=4, bwd_num_warps=2,
                   min_programs=2048, dt_dot=False, rank_block=8, stages=3,
                   pipeline_max_programs=2500, pair_max_length=4096, fwd_dot_min_rank=24,
                   split_pair_min_rank=48)

#: ``(channels per program, warps)`` of the forward kernel when ``fwd_dot_min_rank`` gives it
#: the tensor-core dt projection. Session 14, run 63 (H100, batch 32, kernel time): at
#: VMamba-B's stages 3-4 (dt rank 32 / 64) this forward took 0.451 / 0.483 ms against 0.598 /
#: 0.627 for the default FMA form; at ranks 8 and 16 it was no faster, and its backward was
#: slower at every rank.
FWD_DOT_TILE = (16, 4)


class ScanConfig(NamedTuple):
    """Launch shape of the scan kernels for one problem size."""

    block_d: int
    block_l: int
    chunks: int
    segments: int
    chunks_per_segment: int
    num_warps: int
    dt_dot: bool
    bwd_block_d: int
    bwd_num_warps: int
    bwd_dt_dot: bool
    rank_block: int
    stages: int
    split_pair: bool


def _channels_per_program(block_d: int, smallest: int, batch: int, channels: int) -> int:
    """``block_d`` halved (not below ``smallest``) while the grid is under ``min_programs``."""
    while block_d > smallest and cdiv(channels, block_d) * batch * DIRECTIONS < SCAN_TUNING[
            'min_programs']:
        block_d //= 2
    return block_d


def scan_config(batch: int, channels: int, length: int, rank: int) -> ScanConfig:
    """Pick block sizes and the segment split for ``(B, D, L)`` and dt rank ``R`` (see
    :data:`SCAN_TUNING`); memoised per size and tuning (it runs in every forward and
    backward)."""
    return _scan_config(batch, channels, length, rank, tuple(SCAN_TUNING.items()))


@functools.lru_cache(maxsize=1024)
def _scan_config(batch: int, channels: int, length: int, rank: int,
                 _tuning: tuple) -> ScanConfig:
    block_l = SCAN_TUNING['block_l']
    dt_dot = bool(SCAN_TUNING['dt_dot'])
    smallest = 16 if dt_dot else 4
    requested = (SCAN_TUNING['block_d'], SCAN_TUNING['bwd_block_d'])
    if min(requested) < smallest or block_l < 16:
        raise ValueError(f'SCAN_TUNING: block_d and bwd_block_d must be >= {smallest} and '
                         f'block_l >= 16, got {requested} and {block_l}')
    while block_l > 16 and block_l >= 2 * length:
        block_l //= 2
    chunks = cdiv(length, block_l)
    min_rank = SCAN_TUNING['fwd_dot_min_rank']
    fwd_dot = dt_dot or 0 < min_rank <= rank
    fwd_block_d, num_warps = (FWD_DOT_TILE if fwd_dot and not dt_dot else
                              (requested[0], SCAN_TUNING['num_warps']))
    block_d = _channels_per_program(fwd_block_d, 16 if fwd_dot else 4, batch, channels)
    bwd_block_d = _channels_per_program(requested[1], smallest, batch, channels)
    programs = cdiv(channels, block_d) * batch * DIRECTIONS
    segments = min(chunks, cdiv(SCAN_TUNING['min_programs'], programs))
    per_segment = cdiv(chunks, max(1, segments))
    segments = cdiv(chunks, per_segment)
    small_grid = programs * segments <= SCAN_TUNING['pipeline_max_programs']
    return ScanConfig(block_d, block_l, chunks, segments, per_segment, num_warps, fwd_dot,
                      bwd_block_d, SCAN_TUNING['bwd_num_warps'], dt_dot,
                      SCAN_TUNING['rank_block'], SCAN_TUNING['stages'] if small_grid else 1,
                      0 < SCAN_TUNING['split_pair_min_rank'] <= rank)


def _meta(cfg: ScanConfig, rank: int, backward: bool) -> dict:
    """Compile-time arguments of the forward or the backward scan kernel."""
    return dict(R=rank, RP=max(16, next_power_of_2(rank)),
                BD=cfg.bwd_block_d if backward else cfg.block_d, BL=cfg.block_l,
                DT_DOT=cfg.bwd_dt_dot if backward else cfg.dt_dot, RB=cfg.rank_block,
                NS=cfg.stages,
                num_warps=cfg.bwd_num_warps if backward else cfg.num_warps)


def _paired(cfg: ScanConfig, length: int) -> bool:
    """Pair directions k and k+2 (in one program, or as a split pair in two launches: plain
    stores, no zeroed maps)? See SCAN_TUNING."""
    return cfg.segments == 1 and length <= SCAN_TUNING['pair_max_length']


def _launch(kernel, cfg: ScanConfig, batch: int, inner: int, paired: bool, args: tuple,
            meta: dict) -> None:
    """Run a scan kernel: paired (one segment), one launch whose programs walk directions k and
    k+2 in turn, or, for a split pair (``cfg.split_pair``), two launches, k = 0, 1 and then
    k = 2, 3; unpaired, the segment-summary launch (several segments) and then one program per
    direction and segment (``PAIRED`` 1, 2 and 3, 0: see the scan kernels)."""
    channel_blocks = cdiv(inner, meta['BD'])
    if paired:
        for phase in ((2, 3) if cfg.split_pair else (1, )):
            launch(kernel, (channel_blocks, batch, 2), args,
                   dict(meta, SUMMARY=False, PAIRED=phase))
        return
    grid = (channel_blocks, batch, DIRECTIONS * cfg.segments)
    if cfg.segments > 1:
        launch(kernel, grid, args, dict(meta, SUMMARY=True, PAIRED=0))
    launch(kernel, grid, args, dict(meta, SUMMARY=False, PAIRED=0))


def _check(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, A_logs: Tensor) -> int:
    """Validate shapes; return the dt rank ``R``."""
    if x.dim() != 4:
        raise ValueError(f'ss2d_core (fused): x must be (B, Din, H, W), got {tuple(x.shape)}')
    directions, proj_dim, inner = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    if directions != DIRECTIONS or inner != x.shape[1]:
        raise ValueError(f'ss2d_core (fused): x_proj_weight {tuple(x_proj_weight.shape)} does '
                         f'not match (4, R+2N, Din={x.shape[1]})')
    batch, _, height, width = x.shape
    stride = _row_stride(height * width)
    if inner * batch * stride >= 2**31:
        raise ValueError(f'ss2d_core (fused): Din * B * S = {inner} * {batch} * {stride} (S: '
                         f'H*W = {height * width} rounded up to a multiple of {ROW_ALIGN}) must '
                         f'be < 2**31: the kernels index a scan order of all images with int32. '
                         f'Split the batch into smaller ones, or use backend="reference" for '
                         f'such maps')
    if A_logs.shape[-1] != 1 or proj_dim != rank + 2:
        raise NotImplementedError(
            f'ss2d_core (fused) supports d_state N = 1 only, got A_logs {tuple(A_logs.shape)} '
            f'and x_proj_weight {tuple(x_proj_weight.shape)}; use backend="reference" '
            f'(MMVMAMBA_SS2D_BACKEND=reference) for N > 1')
    return rank


def _slot_order(t: Tensor) -> Tensor:
    """A ``(4, ...)`` tensor by direction as ``(2, 2, ...)`` by slot (a strided view): ``[g, p]``
    is direction ``k = 2p + g``, slot ``2g + p`` (``SLOT_DIRECTION``: the row-major directions,
    g = 0, first). :func:`_direction_order` undoes it."""
    return t.view(2, 2, *t.shape[1:]).transpose(0, 1)


def _direction_order(t: Tensor) -> Tensor:
    """A ``(2, 2, ...)`` tensor by slot as a contiguous ``(4, ...)`` by direction."""
    return t.transpose(0, 1).reshape(DIRECTIONS, *t.shape[2:])


def _pair_weights(x_proj_weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``(2, 2*(R+2), D)`` x-projection weights per scan order of ``xs``, in ``dtype``: order
    ``g`` holds its two slots (directions ``g`` and ``g + 2``)."""
    _, rows, inner = x_proj_weight.shape
    out = torch.empty(2, 2, rows, inner, device=x_proj_weight.device, dtype=dtype)
    return out.copy_(_slot_order(x_proj_weight)).view(2, 2 * rows, inner)


def _slot_dt_weights(dt_projs_weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``(4, R+2, D)`` transposed dt-projection weights per ``proj`` slot, in ``dtype``, with
    two zero rows for the B and C rows of the slot (so that the GEMM with the dt gradient spans
    all ``R+2`` rows of ``grad_proj``)."""
    _, inner, rank = dt_projs_weight.shape
    out = torch.zeros(2, 2, rank + 2, inner, device=dt_projs_weight.device, dtype=dtype)
    out[..., :rank, :].copy_(_slot_order(dt_projs_weight).transpose(2, 3))
    return out.view(DIRECTIONS, rank + 2, inner)


#: Row stride multiple of the maps the scan kernels read and write (see ss2d_scan).
ROW_ALIGN = 16


def _row_stride(length: int) -> int:
    """Row stride ``S`` of the scan's maps: ``length`` rounded up to :data:`ROW_ALIGN`."""
    return cdiv(length, ROW_ALIGN) * ROW_ALIGN


def _new_map(lead: tuple, length: int, *, zeroed: bool = False, **kwargs) -> Tensor:
    """A ``(*lead, S)`` map for ``length`` positions with row stride ``S =
    _row_stride(length)``; :func:`_valid` gives its ``(*lead, length)`` view."""
    new = torch.zeros if zeroed else torch.empty
    return new(*lead, _row_stride(length), **kwargs)


def _valid(row_map: Tensor, length: int) -> Tensor:
    """The ``(..., length)`` view of a map with padded rows."""
    return row_map[..., :length]


#: Most column parts :func:`_block_products` splits its sum into.
MAX_PRODUCT_PARTS = 256


def _product_parts(blocks: int, rows: int, cols: int, columns: int) -> int:
    """How many parts :func:`_block_products` splits its ``columns``-long sum into: the most
    (a power of two, at most :data:`MAX_PRODUCT_PARTS`) whose partial products, ``blocks**2
    * rows * cols`` elements each, stay within an eighth of the operands' ``blocks * (rows +
    cols) * columns``, and whose parts are whole multiples of 16 columns (aligned)."""
    bound = (rows + cols) * columns // (8 * blocks * rows * cols)
    parts = 1
    while (2 * parts <= min(bound, MAX_PRODUCT_PARTS) and columns % (2 * parts * ROW_ALIGN) == 0):
        parts *= 2
    return parts


def _block_products(rows: Tensor, cols: Tensor, blocks: int) -> Tensor:
    """``rows_j @ cols_j^T`` for each of ``blocks`` blocks ``j``, in fp32 (the weight
    gradients): ``rows (J*M, C)`` and ``cols (J*N, C)``, row-major with unit column stride
    (image-minor maps: ``C = B*S``); returns ``(J, M, N)`` (a strided view).

    The sum over the ``C`` columns is split into :func:`_product_parts` parts: one batched
    GEMM over the parts, ``(P, J*M, C/P) @ (P, C/P, J*N)``, of all blocks at once (the
    products of different blocks are computed and dropped: ``J`` times the FLOPs of the
    blocks alone, memory-bound all the same, each operand read once), then a sum over the
    parts and the diagonal blocks. One GEMM per block over all ``C`` columns left its
    ``(M, N)`` output of a few tiles to reduce 100k columns: 0.13 ms a call at VMamba-T's
    stage 1 (batch 32) against 0.04 for per-image products (run 96, H100); one part per
    image wrote ``J**2 * M * N`` per image, which at the 7x7 stage is 3x the operands (runs
    96-97: +1 to +4 ms per training step of VMamba-T/S/B, +113 MiB of VMamba-T's peak)."""
    columns = rows.shape[1]
    rows_per_block, cols_per_block = rows.shape[0] // blocks, cols.shape[0] // blocks
    parts = _product_parts(blocks, rows_per_block, cols_per_block, columns)
    partial = torch.bmm(rows.view(rows.shape[0], parts, -1).transpose(0, 1),
                        cols.view(cols.shape[0], parts, -1).permute(1, 2, 0))
    full = partial.sum(0, dtype=torch.float32)
    return full.view(blocks, rows_per_block, blocks, cols_per_block).diagonal(
        dim1=0, dim2=2).permute(2, 0, 1)


def _scan_inputs(x: Tensor) -> Tensor:
    """``x (B, D, H, W)`` (any strides) as the image-minor pair of maps the scans read,
    ``(2, D, B, S)``: H*W positions per image in row-major (``[0]``) and column-major
    (``[1]``) order, one copy kernel (or two plane transposes); the padding columns zeroed
    (one fill, where ``S > H*W``), so that ``proj``'s padding is zero too and the weight
    gradients may sum over all ``B*S`` columns."""
    batch, inner, height, width = x.shape
    length = height * width
    pair = _new_map((2, inner, batch), length, device=x.device, dtype=x.dtype)
    if pair.shape[3] > length:
        pair[..., length:].zero_()
    scan_orders_into(x, _image_major(pair))
    return pair


def _image_major(pair: Tensor) -> Tensor:
    """An image-minor ``(J, D, B, S)`` map as the ``(B, J, D, S)`` view the layout kernels
    take (any strides)."""
    return pair.permute(2, 0, 1, 3)


def _state_maps(batch: int, inner: int, cfg: ScanConfig,
                **f32) -> tuple[Tensor, Tensor, Tensor]:
    """``states (B, 4, D, NCH)`` and the segment summaries ``seg_decay``, ``seg_state``
    ``(B, 4, NSEG, D)`` (see :func:`_segment_scratch`)."""
    states = torch.empty(batch, DIRECTIONS, inner, cfg.chunks, **f32)
    seg_decay = torch.empty(batch, DIRECTIONS, cfg.segments, inner, **f32)
    return states, seg_decay, _segment_scratch(seg_decay, cfg)


def _segment_scratch(seg_decay: Tensor, cfg: ScanConfig) -> Tensor:
    """A second map of segment summaries like ``seg_decay`` (``seg_state`` forward,
    ``seg_carry`` backward); with one segment the kernels never touch it, so ``seg_decay``
    itself stands in."""
    return torch.empty_like(seg_decay) if cfg.segments > 1 else seg_decay


def _scan_params(dt_projs_weight: Tensor, dt_projs_bias: Tensor, A_logs: Tensor,
                 Ds: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The SSM parameters as the scan kernels read them: contiguous, in their own dtype
    (``wdt (4, D, R)``; ``bias``, ``A_logs``, ``Ds`` as ``(4, D)`` by memory)."""
    return (dt_projs_weight.contiguous(), dt_projs_bias.contiguous(), A_logs.contiguous(),
            Ds.contiguous())


def _forward(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
             A_logs: Tensor, Ds: Tensor, out_norm_weight: Tensor, out_norm_bias: Tensor,
             eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward: ``out`` and what the backward needs (``proj (4, R+2, B, S)``, ``y, stats,
    states, seg_decay, xs``; ``stats (2, B, L)``: the output norm's mean and rstd; ``xs (2,
    Din, B, S)``: x in both scan orders, saved in x's place so that the backward need not copy
    it again)."""
    rank = _check(x, x_proj_weight, dt_projs_weight, A_logs)
    batch, inner, height, width = x.shape
    length = height * width
    cfg = scan_config(batch, inner, length, rank)
    paired = _paired(cfg, length)
    f32 = dict(device=x.device, dtype=torch.float32)
    with autocast_off(x.device.type):
        xs = _scan_inputs(x)
        # (2, 2*(R+2), D) @ (2, D, B*S): (4, R+2, B, S) by slot, each direction in its order.
        stride = xs.shape[3]
        proj = torch.bmm(_pair_weights(x_proj_weight, x.dtype),
                         xs.view(2, inner, batch * stride)).view(DIRECTIONS, rank + 2, batch,
                                                                 stride)
        y = _new_map((batch, inner), length, zeroed=not paired, **f32)
        yt = _new_map((batch, inner), length, zeroed=not paired, **f32)
        states, seg_decay, seg_state = _state_maps(batch, inner, cfg, **f32)
        args = (xs, proj, *_scan_params(dt_projs_weight, dt_projs_bias, A_logs, Ds), y, yt,
                states, seg_decay, seg_state, inner, length, xs.shape[3], cfg.chunks,
                cfg.segments, cfg.chunks_per_segment)
        _launch(ss2d_scan_fwd_kernel, cfg, batch, inner, paired, args,
                _meta(cfg, rank, backward=False))
        y_valid = _valid(y, length)
        transpose_into(_valid(yt, length), y_valid, height, width, accumulate=True)
        out = torch.empty_like(x)
        _, stats = ln2d_forward(y_valid, out_norm_weight, out_norm_bias, eps, flat(out))
    return out, proj, y, stats, states, seg_decay, xs


@torch.library.custom_op('mmvmamba_triton::ss2d_core_fwd', mutates_args=())
def _core_fwd(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dt_projs_bias: Tensor,
              A_logs: Tensor, Ds: Tensor, out_norm_weight: Tensor, out_norm_bias: Tensor,
              eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    args = (x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight,
            out_norm_bias, eps)
    cpp = cpp_ops_for('ss2d_core', x)
    if cpp is not None:
        return tuple(cpp.ss2d_core_forward(*args, *_cpp_config(x, x_proj_weight,
                                                                 dt_projs_weight, A_logs)))
    return _forward(*args)


@_core_fwd.register_fake
def _(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight,
      out_norm_bias, eps):
    rank = _check(x, x_proj_weight, dt_projs_weight, A_logs)
    batch, inner, height, width = x.shape
    length = height * width
    cfg = scan_config(batch, inner, length, rank)
    f32 = torch.float32
    stride = _row_stride(length)
    return (torch.empty_like(x),
            x.new_empty(DIRECTIONS, rank + 2, batch, stride),
            x.new_empty(batch, inner, stride, dtype=f32),
            x.new_empty(2, batch, length, dtype=f32),
            x.new_empty(batch, DIRECTIONS, inner, cfg.chunks, dtype=f32),
            x.new_empty(batch, DIRECTIONS, cfg.segments, inner, dtype=f32),
            x.new_empty(2, inner, batch, stride))


def _backward(grad_out: Tensor, xs: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
              dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, out_norm_weight: Tensor,
              proj: Tensor, y: Tensor, stats: Tensor, states: Tensor,
              seg_decay: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backward: gradients of ``x`` and the two projection weights, of the dt bias,
    A_logs and Ds as one ``(3, 4, Din)`` fp32 tensor, and of the out-norm's weight and bias as
    one ``(2, Din)`` fp32 tensor (one reduction each; a custom op's outputs may not alias, so
    :func:`_gradients` splits them). ``xs``: the forward's pair of scan orders of x; x's shape
    is the output gradient's, and x's gradient takes its layout."""
    grad_out = dense_2d(grad_out)
    rank = _check(grad_out, x_proj_weight, dt_projs_weight, A_logs)
    batch, inner, height, width = grad_out.shape
    length = height * width
    cfg = scan_config(batch, inner, length, rank)
    paired = _paired(cfg, length)
    rows = rank + 2
    f32 = dict(device=xs.device, dtype=torch.float32)
    with autocast_off(xs.device.type):
        # The output gradient through the norm, in both scan orders, image-minor as xs (the
        # scans then address xs, grad_ys, grad_xs and grad_z with one tile of offsets):
        # (2, D, B, S).
        grad_ys = _new_map((2, inner, batch), length, **f32)
        grad_y, grad_yt = _valid(_image_major(grad_ys), length).unbind(1)
        _, grad_norm = ln2d_backward(flat(grad_out), _valid(y, length), out_norm_weight, stats,
                                     torch.float32, out=grad_y)
        transpose_into(grad_y, grad_yt, width, height)
        grad_xs = _new_map((2, inner, batch), length, zeroed=not paired, **f32)
        # Image-minor (see _forward), by slot: the scans' dt gradient and the x projection's.
        grad_proj = _new_map((DIRECTIONS, rows, batch), length, zeroed=True, **f32)
        stride = grad_proj.shape[3]
        grad_z = torch.empty(DIRECTIONS, inner, batch, stride, device=xs.device, dtype=xs.dtype)
        grad_chan = torch.empty(3, batch, DIRECTIONS, cfg.segments, inner, **f32)
        args = (xs, proj, *_scan_params(dt_projs_weight, dt_projs_bias, A_logs, Ds), grad_ys,
                states, seg_decay, _segment_scratch(seg_decay, cfg), grad_xs, grad_z, grad_proj,
                grad_chan, inner, length, stride, cfg.chunks, cfg.segments,
                cfg.chunks_per_segment)
        _launch(ss2d_scan_bwd_kernel, cfg, batch, inner, paired, args,
                _meta(cfg, rank, backward=True))
        # dt projection: delta[k] = wdt[k] @ dt_low[k] over all images, so with gz = d loss /
        # d delta (grad_z, proj and grad_proj by slot; wdt by direction): the input gradient
        # is one bmm over the slots. Both gradients span all R+2 rows of a slot (the dt
        # weight padded with zero rows for the B and C rows): an R-sized dimension (6 in
        # VMamba-T) falls to slow unaligned tensor-core kernels. The padding columns (past
        # ``length``) of xs, proj, grad_z (the scan stores zeros there) and grad_proj are
        # zero, so the sums over positions run over all S columns of each image, a multiple
        # of 16 where ``length`` (196, 49) may not be: a GEMM whose sum runs over an
        # unaligned length took slow align1/align2 kernels (run 81).
        grad_proj.view(DIRECTIONS, rows, -1).add_(torch.bmm(
            _slot_dt_weights(dt_projs_weight, xs.dtype), grad_z.view(DIRECTIONS, inner, -1)))
        # proj[j] @ grad_z[j]^T per slot, as the weight's (4, D, R) by slot: the product's rows
        # are D long (an (R+2)-long row, 34 at VMamba-B's stage 3, is unaligned for the
        # tensor-core kernels, and took a slow one).
        grad_wdt = _block_products(proj.view(DIRECTIONS * rows, -1),
                                   grad_z.view(DIRECTIONS * inner, -1),
                                   DIRECTIONS)[:, :rank].transpose(1, 2)
        del grad_z
        # x projection, per scan order, in x's dtype (tensor cores; as autocast runs the
        # reference's projection): (2, D, 2*(R+2)) @ (2, 2*(R+2), B*S), added to the scans'
        # fp32 gradient in the merge.
        grad_proj = grad_proj.to(xs.dtype).view(2, 2 * rows, -1)
        grad_xs_proj = torch.bmm(_pair_weights(x_proj_weight, xs.dtype).transpose(1, 2),
                                 grad_proj).view(xs.shape)
        grad_x = merge_orders_into(_image_major(grad_xs), _image_major(grad_xs_proj),
                                   torch.empty_like(grad_out))
        # grad_proj[g] @ xs[g]^T per scan order, in x's dtype (no fp32 copy of x).
        grad_w_slots = _block_products(grad_proj.view(DIRECTIONS * rows, -1),
                                       xs.view(2 * inner, -1), 2)
    return (grad_x,
            _direction_order(grad_w_slots.view(2, 2, rows, inner)).to(x_proj_weight.dtype),
            _direction_order(grad_wdt.unflatten(0, (2, 2))).to(dt_projs_weight.dtype),
            grad_chan.sum((1, 3)),
            grad_norm)


@torch.library.custom_op('mmvmamba_triton::ss2d_core_bwd', mutates_args=())
def _core_bwd(grad_out: Tensor, xs: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
              dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, out_norm_weight: Tensor,
              proj: Tensor, y: Tensor, stats: Tensor, states: Tensor,
              seg_decay: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    args = (grad_out, xs, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
            out_norm_weight, proj, y, stats, states, seg_decay)
    cpp = cpp_ops_for('ss2d_core', xs)
    if cpp is not None:
        return tuple(cpp.ss2d_core_backward(*args, *_cpp_config(grad_out, x_proj_weight,
                                                                  dt_projs_weight, A_logs)))
    return _backward(*args)


@_core_bwd.register_fake
def _(grad_out, xs, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight,
      proj, y, stats, states, seg_decay):
    inner = xs.shape[1]
    f32 = torch.float32
    return (torch.empty_like(dense_2d(grad_out)),
            torch.empty_like(x_proj_weight), torch.empty_like(dt_projs_weight),
            xs.new_empty(3, DIRECTIONS, inner, dtype=f32), xs.new_empty(2, inner, dtype=f32))


def _core_setup(ctx, inputs, output):
    """Save for the backward: the pair of scan orders ``xs`` in x's place (one more copy of x
    kept, one copy kernel less in the backward), the parameters and the forward's maps."""
    _, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight, \
        out_norm_bias, _ = inputs
    _, proj, y, stats, states, seg_decay, xs = output
    ctx.save_for_backward(xs, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                          out_norm_weight, proj, y, stats, states, seg_decay)
    ctx.vector_params = tuple((p.shape, p.dtype) for p in (
        dt_projs_bias, A_logs, Ds, out_norm_weight, out_norm_bias))


def _gradients(ctx, grads: tuple) -> tuple:
    """The backward's results as the forward's input gradients: the fp32 ``(3, 4, D)``
    (dt bias, A_logs, Ds) and ``(2, D)`` (out-norm weight, bias) sums as views, each in its
    parameter's shape and dtype."""
    grad_x, grad_x_proj, grad_dt_projs, grad_chan, grad_norm = grads
    vectors = (*grad_chan.unbind(0), *grad_norm.unbind(0))
    return (grad_x, grad_x_proj, grad_dt_projs,
            *(g.view(shape).to(dtype) for g, (shape, dtype) in zip(vectors, ctx.vector_params)),
            None)


def _core_backward(ctx, grad_out, *_unused):
    return _gradients(ctx, _core_bwd(grad_out, *ctx.saved_tensors))


_core_fwd.register_autograd(_core_backward, setup_context=_core_setup)


class _Core(torch.autograd.Function):
    """The same forward and backward as a plain ``autograd.Function``, for eager mode: a
    ``torch.library`` custom op costs about twice its host time per call, and the eager step
    at batch 128 is bound by host time whenever the host is slow (docs/benchmarks.md,
    session 8). Under ``torch.compile`` the custom ops above are used (opaque to inductor,
    with fake implementations)."""

    @staticmethod
    def forward(ctx, *inputs):
        outputs = _forward(*inputs)
        _core_setup(ctx, inputs, outputs)
        return outputs[0]

    @staticmethod
    def backward(ctx, grad_out):
        return _gradients(ctx, _backward(grad_out, *ctx.saved_tensors))


def ss2d_core_cpp(cpp, x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                  dt_projs_bias: Tensor, A_logs: Tensor, Ds: Tensor, out_norm_weight: Tensor,
                  out_norm_bias: Tensor, eps: float = 1e-5) -> Tensor:
    """The fused core with its eager forward and backward issued from C++ (``cpp``:
    ``mmvmamba._C`` set up by :mod:`.host`): the same ATen ops and kernels as ``_Core``, in the
    same order, for less host time per call. Same contract as :func:`ss2d_core_fused`.

    :func:`ss2d_core_fused`'s eager CUDA path when ``host.CPP_PASSES['ss2d_core']`` is on (the
    default; under Triton's interpreter it matches the Python passes to the bit)."""
    return cpp.ss2d_core(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                         out_norm_weight, out_norm_bias, float(eps),
                         *_cpp_config(x, x_proj_weight, dt_projs_weight, A_logs))


def _cpp_config(x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                A_logs: Tensor) -> tuple[int, list[int]]:
    """The C++ passes' last two arguments: the dt rank (shapes validated) and the scan config
    as ints (the :class:`ScanConfig` fields, then whether the scan is paired)."""
    rank = _check(x, x_proj_weight, dt_projs_weight, A_logs)
    batch, inner, height, width = x.shape
    length = height * width
    cfg = scan_config(batch, inner, length, rank)
    return rank, [*map(int, cfg), int(_paired(cfg, length))]


def ss2d_core_fused(x: Tensor,
                    x_proj_weight: Tensor,
                    dt_projs_weight: Tensor,
                    dt_projs_bias: Tensor,
                    A_logs: Tensor,
                    Ds: Tensor,
                    out_norm_weight: Tensor,
                    out_norm_bias: Tensor,
                    eps: float = 1e-5,
                    *,
                    scan_backend: str | None = None) -> Tensor:
    """SS2D core (spec steps 3-9) for d_state N = 1, fused with Triton.

    Same contract as :func:`mmvmamba.ops.reference.ss2d_core`. The projections and the
    recurrence accumulate in fp32; the merged map and its LayerNorm are fp32; the result is
    cast to ``x.dtype``. The merge adds the four directions with atomics, so results can differ
    between runs in the last bits of fp32.

    Args:
        x (Tensor): ``(B, Din, H, W)`` after the depthwise conv and SiLU; fp32/fp16/bf16.
        x_proj_weight (Tensor): ``(4, R+2, Din)``.
        dt_projs_weight (Tensor): ``(4, Din, R)``.
        dt_projs_bias (Tensor): ``(4, Din)``.
        A_logs (Tensor): ``(4*Din, 1)``.
        Ds (Tensor): ``(4*Din,)``.
        out_norm_weight (Tensor): ``(Din,)``.
        out_norm_bias (Tensor): ``(Din,)``.
        eps (float): Output LayerNorm epsilon. Default: 1e-5.
        scan_backend (str, optional): Unused: the fused core runs its own scan (accepted so
            that callers can pass one argument set to every backend).

    Returns:
        Tensor: ``(B, Din, H, W)`` in ``x.dtype``.

    Raises:
        NotImplementedError: ``N > 1`` (use the reference backend).
        ValueError: Shapes that do not fit the contract.
    """
    args = (x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight,
            out_norm_bias, float(eps))
    if torch.compiler.is_compiling():
        return _core_fwd(*args)[0]
    cpp = cpp_ops_for('ss2d_core', x)
    if cpp is not None:
        return ss2d_core_cpp(cpp, *args)
    return _Core.apply(*args)
