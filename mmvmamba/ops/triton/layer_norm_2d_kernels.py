"""Triton kernels of the channel-first LayerNorm: normalise ``(B, C, L)`` over ``C``, no permutes.

One program owns ``BP`` consecutive positions of one image and all ``C`` channels (padded to the
power of two ``BC``): loads run along the contiguous position axis, statistics are reduced over
the channel axis in registers, in fp32 whatever the input dtype.

Layouts: x, out and the gradients are ``(B, C, L)`` maps given by their element strides
(batch, channel, position): contiguous (``(C*L, L, 1)``) or channels-last (``(L*C, 1, C)``); a
stride of 1 is specialised by Triton, so the loads run along whichever axis is contiguous.
The input gradient may have strides of its own. weight, bias ``(C,)`` in any float dtype (read
as fp32); stats ``(2, B, L)`` fp32, contiguous: the mean and the reciprocal standard deviation
per position.
"""
import triton
import triton.language as tl

__all__ = ['layer_norm_2d_fwd_kernel', 'layer_norm_2d_bwd_kernel']


@triton.jit
def _offsets(b, chans, pos, stride_b, stride_c, stride_l):
    """Element offsets of the ``(channels, positions)`` tile of image ``b``."""
    return (b * stride_b + chans[:, None].to(tl.int64) * stride_c
            + pos[None, :].to(tl.int64) * stride_l)


@triton.jit
def _stats_rows(stats_ptr, b, L, pos):
    """Pointers to the mean and the rstd of image ``b``'s positions in ``stats (2, B, L)`` (B is
    the grid's second dimension)."""
    return stats_ptr + b * L + pos, stats_ptr + (tl.num_programs(1) + b) * L + pos


@triton.jit
def layer_norm_2d_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, stats_ptr,
                             C, L, eps, x_sb, x_sc, x_sl, o_sb, o_sc, o_sl,
                             BC: tl.constexpr, BP: tl.constexpr,
                             HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """``out = (x - mean) * rstd * weight + bias`` over the channel axis; saves mean and rstd;
    grid ``(cdiv(L, BP), B)``."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    chans = tl.arange(0, BC)
    pos = pid_p * BP + tl.arange(0, BP)
    chan_ok = chans < C
    pos_ok = pos < L
    tile_ok = chan_ok[:, None] & pos_ok[None, :]
    x = tl.load(x_ptr + _offsets(b, chans, pos, x_sb, x_sc, x_sl), mask=tile_ok,
                other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / C
    centred = tl.where(tile_ok, x - mean[None, :], 0.0)
    var = tl.sum(centred * centred, axis=0) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    out = centred * rstd[None, :]
    if HAS_WEIGHT:
        out = out * tl.load(w_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_BIAS:
        out = out + tl.load(b_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)[:, None]
    tl.store(out_ptr + _offsets(b, chans, pos, o_sb, o_sc, o_sl),
             out.to(out_ptr.dtype.element_ty), mask=tile_ok)
    mean_ptr, rstd_ptr = _stats_rows(stats_ptr, b, L, pos)
    tl.store(mean_ptr, mean, mask=pos_ok)
    tl.store(rstd_ptr, rstd, mask=pos_ok)


@triton.jit
def layer_norm_2d_bwd_kernel(gout_ptr, x_ptr, w_ptr, stats_ptr, gx_ptr, gwb_ptr,
                             C, L, g_sb, g_sc, g_sl, x_sb, x_sc, x_sl, gx_sb, gx_sc, gx_sl,
                             BC: tl.constexpr, BP: tl.constexpr, PB: tl.constexpr,
                             HAS_WEIGHT: tl.constexpr):
    """Input gradient, plus this program's partial weight/bias gradients, over ``PB``
    consecutive blocks of ``BP`` positions; grid ``(cdiv(cdiv(L, BP), PB), B)``.

    ``gwb`` is ``(B * cdiv(cdiv(L, BP), PB), 2, C)`` fp32: per program, rows
    ``sum(gout * xhat)`` and ``sum(gout)`` over its positions; the caller sums over the first
    axis.
    """
    pid_p = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    chans = tl.arange(0, BC)
    chan_ok = chans < C
    if HAS_WEIGHT:
        w = tl.load(w_ptr + chans, mask=chan_ok, other=0.0).to(tl.float32)[:, None]
    # Per-element sums over the tiles; reduced over positions once, after the loop (a reduction
    # over positions crosses warps: shared memory and barriers).
    acc_gxhat = tl.zeros((BC, BP), dtype=tl.float32)
    acc_g = tl.zeros((BC, BP), dtype=tl.float32)
    for block in range(PB):
        pos = (pid_p * PB + block) * BP + tl.arange(0, BP)
        pos_ok = pos < L
        tile_ok = chan_ok[:, None] & pos_ok[None, :]
        x = tl.load(x_ptr + _offsets(b, chans, pos, x_sb, x_sc, x_sl), mask=tile_ok,
                    other=0.0).to(tl.float32)
        gout = tl.load(gout_ptr + _offsets(b, chans, pos, g_sb, g_sc, g_sl), mask=tile_ok,
                       other=0.0).to(tl.float32)
        mean_ptr, rstd_ptr = _stats_rows(stats_ptr, b, L, pos)
        mean = tl.load(mean_ptr, mask=pos_ok, other=0.0)
        rstd = tl.load(rstd_ptr, mask=pos_ok, other=0.0)
        xhat = tl.where(tile_ok, (x - mean[None, :]) * rstd[None, :], 0.0)
        if HAS_WEIGHT:
            g_xhat = gout * w
        else:
            g_xhat = gout
        mean_g = tl.sum(g_xhat, axis=0) / C
        mean_gx = tl.sum(g_xhat * xhat, axis=0) / C
        gx = (g_xhat - mean_g[None, :] - xhat * mean_gx[None, :]) * rstd[None, :]
        tl.store(gx_ptr + _offsets(b, chans, pos, gx_sb, gx_sc, gx_sl),
                 gx.to(gx_ptr.dtype.element_ty), mask=tile_ok)
        acc_gxhat += gout * xhat
        acc_g += gout

    part = gwb_ptr + (b * tl.num_programs(0) + pid_p) * 2 * C + chans
    tl.store(part, tl.sum(acc_gxhat, axis=1), mask=chan_ok)
    tl.store(part + C, tl.sum(acc_g, axis=1), mask=chan_ok)
