"""Triton kernels of the fused SS2D scan (N = 1): four scan orders, dt projection, merge.

One program owns a block of ``BD`` channels of one image, a scan direction ``k`` (or two) and one
segment of the scan (``NSEG`` segments of ``SEG_CH`` chunks; one segment unless the grid would
be too small to fill the GPU). It walks its chunks of ``BL`` steps, reading the activation and
the direction's ``(dt_low, B, C)`` rows, applies the dt projection, bias and softplus in
registers, runs the recurrence in fp32 with ``tl.associative_scan`` and a state carried across
chunks, and writes its output into a merged map: with one segment a program runs direction
``k`` and then ``k + 2`` over the same map (a store, then an add: no zeroing, no atomics);
with several, each direction's program adds atomically into a zeroed map.

The row-major directions (k = 0, 2) read ``xs[:, 0]`` and add into ``y``; the column-major
ones (k = 1, 3) read ``xs[:, 1]``, the transposed copy of the map, and add into ``yt`` (the
caller adds ``yt`` transposed into ``y``). So every direction walks memory contiguously:
gathering the column-major orders straight from the row-major map cost 2x (56x56) to 12x
(256x256) the time of a row-major direction on an H100.

Every chunk covers ascending positions ``[c*BL, (c+1)*BL)``; the backward directions
(k >= 2, ``REVERSE``, a compile-time flag) visit the chunks last first and scan each one with
``reverse=True``. With ascending offsets (and the row stride ``S`` a multiple of 16, which
Triton specialises on) the compiler can prove each row contiguous and aligned, loads several
steps per lane at once and gives the scan a layout with those consecutive steps in each lane
and a row within one warp (4 steps x 16 lanes at the default 64-step chunks, 8 x 32 at 256): a
sequential scan in registers, then shuffles. Descending offsets (``L-1-l``) left it unable to
prove anything, and the scan ran on single steps per lane across all warps, through shared
memory (``tools/analysis/triton_resources.py`` prints the layout).

Compile-time knobs beside the block sizes (``ss2d_core.SCAN_TUNING``): ``DT_DOT`` and ``RB``
choose how the dt projection runs (see :func:`_dt_projection`), ``NS`` the software pipelining
depth of the loops over a row's chunks (1: none).

With several segments a ``SUMMARY`` launch first reduces each segment to its total decay and
its end state from a zero start; the main launch then starts segment ``s`` from the state
composed of the summaries of segments ``0..s-1``. The backward does the same in reverse for the
state gradient.

Layouts ("direction order" is row-major positions ``h*W + w`` for k = 0, 2 and column-major
positions ``w*H + h`` for k = 1, 3). Every map of positions has a row stride ``S``, ``L``
rounded up to a multiple of 16 (the kernels never read the ``S - L`` padding columns, and write
only zeros there: in ``grad_z``, whose padding the core's GEMMs read), so
that every row starts 16-element aligned and ``S`` is specialised as a multiple of 16: at
L = 196 or 49 (VMamba-T's stages 3-4) unaligned rows left the compiler with single-element
loads, the slow layout and up to 255 registers in the backward. The maps are otherwise dense.
The maps the core's GEMMs read or write are *image-minor*, ``(..., rows, B, S)``: each row
holds the ``S`` columns of every image in turn, so its rows are ``RS = B * S`` apart (the
kernels take ``B`` from their grid) and one scan order's or slot's product over all images is
one matrix product (int32 offsets within a map: ``D * B * S < 2**31``, checked on the host):
    xs     ``(2, D, B, S)`` the activation in row-major (``xs[0]``) and column-major
           (``xs[1]``) order, any float dtype: one pair of maps, written by one copy.
    proj   ``(4, R+2, B, S)`` x projection, rows dt_low (R), B, C, in direction order; slot
           ``s`` holds direction ``SLOT_DIRECTION[s]`` (slots 0, 1: k = 0, 2 from ``xs[0]``;
           slots 2, 3: k = 1, 3 from ``xs[1]``), so one batched GEMM fills it.
    wdt    ``(K, D, R)`` dt projection.  bias, A_logs (``A = -exp(A_logs)``), Ds: ``(K, D)``,
           by direction (the parameters as they are, any float dtype, read as fp32).
    y, yt  ``(B, D, S)`` fp32 merged outputs of k = 0, 2 / of k = 1, 3 (column-major; zeroed
           by the caller unless paired). Two maps, not a pair: ``y`` is saved for the
           backward and ``yt`` is not.
    states ``(B, K, D, NCH)`` fp32 state entering each chunk (saved for the backward).
    seg_decay, seg_state ``(B, K, NSEG, D)`` fp32 segment summaries (forward);
    seg_carry ``(B, K, NSEG, D)`` fp32 state-gradient summaries (backward). With one segment
    they are never touched (the caller may pass any tensor).

Direction ``k`` visits scan step ``l`` at direction-order position ``l`` (k < 2) or
``L-1-l`` (k >= 2). Chunk ``j`` in visiting order (the index of ``states`` and of the segments)
covers positions ``[c*BL, (c+1)*BL)`` with ``c = j`` (k < 2) or ``c = NCH-1-j`` (k >= 2).
"""
import triton
import triton.language as tl

__all__ = ['ss2d_scan_fwd_kernel', 'ss2d_scan_bwd_kernel', 'SLOT_DIRECTION']

#: Direction stored in each ``proj`` slot (its own inverse: also the slot of each direction).
SLOT_DIRECTION = (0, 2, 1, 3)


@triton.jit
def _affine_combine(a_left, b_left, a_right, b_right):
    """Compose ``h -> a*h + b`` maps: left first, then right."""
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _adjoint_combine(first_hi, rest_hi, g_hi, first_lo, rest_lo, g_lo):
    """Join the adjoint summaries of steps ``[k+1..r]`` (hi) and ``[l..k]`` (lo).

    Steps are numbered in visiting order. A run of steps ``[l..r]`` is summarised by its first
    decay ``decay[l]``, the product of the others ``decay[l+1] * ... * decay[r]`` and
    ``g = sum_m decay[l+1] * ... * decay[m] * b[m]``, which for the suffix of a chunk is the
    state gradient ``grad_h[l]`` of the recurrence ``grad_h[l] = b[l] + decay[l+1] *
    grad_h[l+1]``. This scan runs against the visiting order, and ``tl.associative_scan``
    passes the run it meets first (the later one) first. Carrying ``decay[l]`` along avoids
    shifting the decays by one step.
    """
    link = rest_lo * first_hi
    return first_lo, link * rest_hi, g_lo + link * g_hi


@triton.jit
def _chunk_positions(j, cols, NCH, BL: tl.constexpr, REVERSE: tl.constexpr):
    """Ascending direction-order positions of the ``j``-th chunk visited."""
    if REVERSE:
        return (NCH - 1 - j) * BL + cols
    return j * BL + cols


@triton.jit
def _edge_mask(cols, LAST: tl.constexpr, REVERSE: tl.constexpr, BL: tl.constexpr):
    """``(1, BL)`` mask of the column a chunk visits last (``LAST``) or first."""
    edge: tl.constexpr = (BL - 1) if LAST != REVERSE else 0
    return cols[None, :] == edge


@triton.jit
def _edge_column(tile, cols, LAST: tl.constexpr, REVERSE: tl.constexpr, BL: tl.constexpr):
    """Column of a ``(BD, BL)`` tile visited last (``LAST``) or first in a chunk: ``(BD,)``."""
    return tl.sum(tl.where(_edge_mask(cols, LAST, REVERSE, BL), tile, 0.0), axis=1)


@triton.jit
def _proj_slot(k):
    """Slot of direction ``k`` in ``proj`` (see ``SLOT_DIRECTION``)."""
    return (k % 2) * 2 + k // 2


@triton.jit
def _image_row(row, b, S, RS):
    """Offset of image ``b``'s ``S`` columns of row ``row`` of an image-minor map
    ``(rows, B, S)``, whose rows are ``RS = B * S`` apart (int64)."""
    return row.to(tl.int64) * RS + b * S


@triton.jit
def _softplus(z):
    """softplus with PyTorch's threshold 20, accurate for very negative ``z``."""
    e = tl.exp(-tl.abs(z))
    log1p_e = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))
    return tl.where(z > 20.0, z, tl.maximum(z, 0.0) + log1p_e)


@triton.jit
def _row_tile(pos, step_ok, BD: tl.constexpr, BL: tl.constexpr):
    """Offsets and mask of a per-position row as a ``(BD, BL)`` tile (see _chunk_inputs)."""
    return (tl.broadcast_to(pos[None, :], (BD, BL)),
            tl.broadcast_to(step_ok[None, :], (BD, BL)))


@triton.jit
def _dt_projection(proj_k, wdt_rows, chan_ok, pos, step_ok, RS, R: tl.constexpr,
                   RP: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, DT_DOT: tl.constexpr,
                   RB: tl.constexpr):
    """``delta = wdt @ dt_low`` for one chunk: ``(BD, BL)`` fp32.

    ``DT_DOT``: one tensor-core dot in 3xTF32 (fp32-accurate; needs ``BD >= 16``). Otherwise
    broadcast FMAs, one dt_low row at a time: all ``R`` unrolled (``RB == 0`` or ``RB >= R``:
    every load in flight at once, but the registers grow with ``R``: at R = 24 and 48,
    VMamba-T's stages 3-4, the sm_90 compile needs 150-255 per thread), or ``RB`` unrolled
    rows per step of a loop over the rank (the registers of an ``RB``-row projection).
    """
    if DT_DOT:
        ranks = tl.arange(0, RP)
        w_dt = tl.load(wdt_rows[:, None] + ranks[None, :],
                       mask=chan_ok[:, None] & (ranks[None, :] < R), other=0.0).to(tl.float32)
        low = tl.load(proj_k + ranks[:, None] * RS + pos[None, :],
                      mask=(ranks[:, None] < R) & step_ok[None, :], other=0.0).to(tl.float32)
        delta = tl.dot(w_dt, low, input_precision='tf32x3')
    else:
        row_offs, row_ok = _row_tile(pos, step_ok, BD, BL)
        delta = tl.zeros([BD, BL], dtype=tl.float32)
        if RB == 0 or RB >= R:
            for r in tl.static_range(R):
                delta += _rank_term(proj_k, wdt_rows, chan_ok, row_offs, row_ok, r, RS)
        else:
            for first in range(0, R, RB):
                for i in tl.static_range(RB):
                    r = first + i
                    if R % RB == 0:
                        delta += _rank_term(proj_k, wdt_rows, chan_ok, row_offs, row_ok, r, RS)
                    else:  # the last step's rows past R are masked out
                        delta += _rank_term(proj_k, wdt_rows, chan_ok & (r < R), row_offs,
                                            row_ok & (r < R), r, RS)
    return delta


@triton.jit
def _rank_term(proj_k, wdt_rows, chan_ok, row_offs, row_ok, r, RS):
    """``wdt[:, r] * dt_low[r]``: one rank's ``(BD, BL)`` term of the dt projection (``proj``'s
    rows ``RS`` apart)."""
    w_r = tl.load(wdt_rows + r, mask=chan_ok, other=0.0).to(tl.float32)
    low_r = tl.load(proj_k + r * RS + row_offs, mask=row_ok, other=0.0).to(tl.float32)
    return w_r[:, None] * low_r


@triton.jit
def _chunk_inputs(x_b, offs, proj_k, wdt_rows, bias, a_coef, chan_ok, pos, step_ok, RS,
                  R: tl.constexpr, RP: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
                  DT_DOT: tl.constexpr, RB: tl.constexpr):
    """Load one chunk and form its recurrence terms; padding steps get decay 1, drive 0.

    ``x_b + offs``: the chunk of the activation; ``proj_k``: the direction's ``proj`` rows,
    ``RS`` apart. Returns ``u, z, dt, decay, drive, b_in, c_out``, all ``(BD, BL)`` fp32. The
    per-position rows (dt_low, B, C) are loaded as whole tiles, every channel row reading the
    same positions (from L1), rather than as ``(BL,)`` vectors broadcast across channels: the
    vectors' layout made the compiler compute the dt projection and softplus in a layout of
    single steps per lane and convert the tiles to the scan's layout through shared memory.
    """
    tile_ok = chan_ok[:, None] & step_ok[None, :]
    row_offs, row_ok = _row_tile(pos, step_ok, BD, BL)
    u = tl.load(x_b + offs, mask=tile_ok, other=0.0).to(tl.float32)
    delta = _dt_projection(proj_k, wdt_rows, chan_ok, pos, step_ok, RS, R, RP, BD, BL, DT_DOT,
                           RB)
    b_in = tl.load(proj_k + R * RS + row_offs, mask=row_ok, other=0.0).to(tl.float32)
    c_out = tl.load(proj_k + (R + 1) * RS + row_offs, mask=row_ok, other=0.0).to(tl.float32)
    z = delta + bias[:, None]
    dt = _softplus(z)
    decay = tl.where(tile_ok, tl.exp(dt * a_coef[:, None]), 1.0)
    drive = tl.where(tile_ok, dt * b_in * u, 0.0)
    return u, z, dt, decay, drive, b_in, c_out


@triton.jit
def _program_channels(D, BD: tl.constexpr):
    """Image ``b`` (int64) and channel block ``chans`` / ``chan_ok`` of this program."""
    chans = tl.program_id(0) * BD + tl.arange(0, BD)
    return tl.program_id(1).to(tl.int64), chans, chans < D


@triton.jit
def _direction_setup(k, b, chans, chan_ok, bias_ptr, a_ptr, ds_ptr, D, S, RS, NCH, NSEG,
                     R: tl.constexpr):
    """Per-direction parameters and row offsets shared by the forward and the backward.

    Returns ``bias, a_coef, skip`` (``(BD,)`` fp32), ``slot_row`` (offset of direction ``k``'s
    rows in the image-minor ``proj`` / ``gproj``, for image ``b``), ``kd`` (``k * D + chans``,
    the rows of ``wdt``), ``state_rows`` (offsets of the channels' rows in ``states``) and
    ``seg_base`` (offsets in the segment summaries).
    """
    kd = k * D + chans
    bias = tl.load(bias_ptr + kd, mask=chan_ok, other=0.0).to(tl.float32)
    a_log = tl.load(a_ptr + kd, mask=chan_ok, other=0.0).to(tl.float32)
    a_coef = -tl.exp(a_log)  # A = -exp(A_logs)
    skip = tl.load(ds_ptr + kd, mask=chan_ok, other=0.0).to(tl.float32)
    slot_row = _image_row(_proj_slot(k) * (R + 2), b, S, RS)
    state_rows = ((b * 4 + k) * D + chans).to(tl.int64) * NCH
    seg_base = ((b * 4 + k) * NSEG) * D + chans
    return bias, a_coef, skip, slot_row, kd, state_rows, seg_base


@triton.jit
def _merge(dst, value, mask, MERGE: tl.constexpr):
    """Put ``value`` into the merged map: 0 atomic add, 1 store, 2 add to what is there."""
    if MERGE == 0:
        tl.atomic_add(dst, value, mask=mask, sem='relaxed')
    elif MERGE == 1:
        tl.store(dst, value, mask=mask)
    else:
        tl.store(dst, value + tl.load(dst, mask=mask, other=0.0), mask=mask)


@triton.jit
def _scan_direction_fwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr, a_ptr,
                        ds_ptr, y_ptr, yt_ptr, states_ptr, seg_decay_ptr, seg_state_ptr,
                        D, L, S, NCH, NSEG, SEG_CH, R: tl.constexpr, RP: tl.constexpr,
                        BD: tl.constexpr, BL: tl.constexpr, DT_DOT: tl.constexpr, RB: tl.constexpr,
                        NS: tl.constexpr, SUMMARY: tl.constexpr, MERGE: tl.constexpr,
                        REVERSE: tl.constexpr):
    """One program's work for direction ``k`` (``REVERSE``: ``k >= 2``), segment ``seg``."""
    cols = tl.arange(0, BL)
    RS = S * tl.num_programs(1)  # row stride of the image-minor maps
    bias, a_coef, skip, slot_row, kd, state_offs, seg_base = _direction_setup(
        k, b, chans, chan_ok, bias_ptr, a_ptr, ds_ptr, D, S, RS, NCH, NSEG, R)
    x_b = xs_ptr + _image_row((k % 2) * D, b, S, RS)  # this direction's scan order
    if k % 2 == 1:  # column-major directions: the transposed output map
        y_b = yt_ptr + b * D * S
    else:
        y_b = y_ptr + b * D * S
    proj_k = proj_ptr + slot_row
    wdt_rows = wdt_ptr + kd * R
    state_rows = states_ptr + state_offs

    h = tl.zeros([BD], dtype=tl.float32)
    total_decay = tl.full([BD], 1.0, dtype=tl.float32)
    if not SUMMARY:
        for earlier in range(seg):  # state entering this segment, from the earlier segments
            seg_decay = tl.load(seg_decay_ptr + seg_base + earlier * D, mask=chan_ok, other=1.0)
            seg_state = tl.load(seg_state_ptr + seg_base + earlier * D, mask=chan_ok, other=0.0)
            h = seg_decay * h + seg_state
    first = seg * SEG_CH
    for j in tl.range(first, tl.minimum(first + SEG_CH, NCH), num_stages=NS):
        pos = _chunk_positions(j, cols, NCH, BL, REVERSE)
        step_ok = pos < L
        offs = chans[:, None] * S + pos[None, :]  # in y, yt: int32, one image's (D, S) fits
        x_offs = chans[:, None] * RS + pos[None, :]  # in xs: int32, D * B * S < 2**31
        u, z, dt, decay, drive, b_in, c_out = _chunk_inputs(
            x_b, x_offs, proj_k, wdt_rows, bias, a_coef, chan_ok, pos, step_ok, RS, R, RP, BD,
            BL, DT_DOT, RB)
        decay_cum, h_local = tl.associative_scan((decay, drive), 1, _affine_combine,
                                                 reverse=REVERSE)
        h_all = h_local + decay_cum * h[:, None]
        if SUMMARY:
            total_decay *= _edge_column(decay_cum, cols, True, REVERSE, BL)
        else:
            tl.store(state_rows + j, h, mask=chan_ok)
            y = c_out * h_all + skip[:, None] * u
            _merge(y_b + offs, y, chan_ok[:, None] & step_ok[None, :], MERGE)
        # Padding steps (past L: the end of the last chunk, which a REVERSE direction visits
        # first) decay by 1 with no drive, so the column visited last holds the final state.
        h = _edge_column(h_all, cols, True, REVERSE, BL)
    if SUMMARY:
        tl.store(seg_decay_ptr + seg_base + seg * D, total_decay, mask=chan_ok)
        tl.store(seg_state_ptr + seg_base + seg * D, h, mask=chan_ok)


@triton.jit
def ss2d_scan_fwd_kernel(xs_ptr, proj_ptr, wdt_ptr, bias_ptr, a_ptr, ds_ptr, y_ptr, yt_ptr,
                         states_ptr, seg_decay_ptr, seg_state_ptr,
                         D, L, S, NCH, NSEG, SEG_CH, R: tl.constexpr, RP: tl.constexpr,
                         BD: tl.constexpr, BL: tl.constexpr, DT_DOT: tl.constexpr, RB: tl.constexpr,
                         NS: tl.constexpr, SUMMARY: tl.constexpr, PAIRED: tl.constexpr):
    """Forward. See the module docstring.

    ``PAIRED`` (one segment only; grid ``(cdiv(D, BD), B, 2)``): 1, program ``p`` runs
    direction ``p`` and then ``p + 2`` over the same map, storing into ``y`` / ``yt`` and then
    adding to it, so the maps need no zeroing and no atomics; 2 and 3, the same pair as two
    launches in turn (a split pair: directions ``p`` storing, then ``p + 2`` adding; one
    direction per program takes fewer registers). 0: grid ``(cdiv(D, BD), B, 4 * NSEG)``, one
    direction's segment per program, atomic adds into zeroed maps; ``SUMMARY=True`` writes only
    the segment summaries; ``False`` writes ``y``, ``yt`` and ``states``.
    """
    b, chans, chan_ok = _program_channels(D, BD)
    if PAIRED != 0:
        k = tl.program_id(2)
        if PAIRED != 3:  # 1: both directions in turn; 2: the first launch of a split pair
            _scan_direction_fwd(k, 0, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr,
                                a_ptr, ds_ptr, y_ptr, yt_ptr, states_ptr, seg_decay_ptr,
                                seg_state_ptr, D, L, S, NCH, NSEG, SEG_CH, R, RP, BD, BL, DT_DOT,
                                RB, NS, False, 1, False)
        if PAIRED == 1:
            tl.debug_barrier()  # the second direction reads what other threads stored
        if PAIRED != 2:  # 1, or 3: the second launch of a split pair
            _scan_direction_fwd(k + 2, 0, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr,
                                bias_ptr, a_ptr, ds_ptr, y_ptr, yt_ptr, states_ptr,
                                seg_decay_ptr, seg_state_ptr, D, L, S, NCH, NSEG, SEG_CH, R, RP,
                                BD, BL, DT_DOT, RB, NS, False, 2, True)
    else:
        k = tl.program_id(2) // NSEG
        seg = tl.program_id(2) % NSEG
        if k >= 2:
            _scan_direction_fwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr,
                                bias_ptr, a_ptr, ds_ptr, y_ptr, yt_ptr, states_ptr,
                                seg_decay_ptr, seg_state_ptr, D, L, S, NCH, NSEG, SEG_CH, R, RP,
                                BD, BL, DT_DOT, RB, NS, SUMMARY, 0, True)
        else:
            _scan_direction_fwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr,
                                bias_ptr, a_ptr, ds_ptr, y_ptr, yt_ptr, states_ptr,
                                seg_decay_ptr, seg_state_ptr, D, L, S, NCH, NSEG, SEG_CH, R, RP,
                                BD, BL, DT_DOT, RB, NS, SUMMARY, 0, False)


@triton.jit
def _scan_direction_bwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr, a_ptr,
                        ds_ptr, gys_ptr, states_ptr, seg_decay_ptr, seg_carry_ptr, gxs_ptr,
                        gz_ptr, gproj_ptr, gchan_ptr,
                        D, L, S, NCH, NSEG, SEG_CH, R: tl.constexpr, RP: tl.constexpr,
                        BD: tl.constexpr, BL: tl.constexpr, DT_DOT: tl.constexpr, RB: tl.constexpr,
                        NS: tl.constexpr, SUMMARY: tl.constexpr, MERGE: tl.constexpr,
                        REVERSE: tl.constexpr):
    """One program's work for direction ``k`` (``REVERSE``: ``k >= 2``), segment ``seg``."""
    cols = tl.arange(0, BL)
    RS = S * tl.num_programs(1)  # row stride of the image-minor maps
    bias, a_coef, skip, slot_row, kd, state_offs, seg_base = _direction_setup(
        k, b, chans, chan_ok, bias_ptr, a_ptr, ds_ptr, D, S, RS, NCH, NSEG, R)
    # This direction's scan order in xs, gys and gxs, its slot in gz: all (..., D, B, S),
    # so one tile of offsets addresses all four.
    order = _image_row((k % 2) * D, b, S, RS)
    x_b = xs_ptr + order
    gy_b = gys_ptr + order
    gx_b = gxs_ptr + order
    gz_k = gz_ptr + _image_row(_proj_slot(k) * D, b, S, RS)
    proj_k = proj_ptr + slot_row
    gproj_k = gproj_ptr + slot_row
    wdt_rows = wdt_ptr + kd * R
    state_rows = states_ptr + state_offs

    g_bias = tl.zeros([BD], dtype=tl.float32)
    g_a = tl.zeros([BD], dtype=tl.float32)
    g_skip = tl.zeros([BD], dtype=tl.float32)
    carry = tl.zeros([BD], dtype=tl.float32)  # decay[l+1] * grad_h[l+1] from the next chunk
    if not SUMMARY:
        for i in range(NSEG - 1 - seg):  # from the later segments, last first
            later = NSEG - 1 - i
            seg_decay = tl.load(seg_decay_ptr + seg_base + later * D, mask=chan_ok, other=1.0)
            seg_carry = tl.load(seg_carry_ptr + seg_base + later * D, mask=chan_ok, other=0.0)
            carry = seg_carry + seg_decay * carry
    first = seg * SEG_CH
    last = tl.minimum(first + SEG_CH, NCH)
    last_col = _edge_mask(cols, True, REVERSE, BL)  # visited last in the forward's order
    for j_rev in tl.range(last - first, num_stages=NS):
        j = last - 1 - j_rev
        pos = _chunk_positions(j, cols, NCH, BL, REVERSE)
        step_ok = pos < L
        tile_ok = chan_ok[:, None] & step_ok[None, :]
        # int32: D * B * S < 2**31. A second tile of offsets, for image-major gys and gxs,
        # took the paired kernel from 96 to 114 registers at R = 6 (sm_90, fp16).
        offs = chans[:, None] * RS + pos[None, :]
        u, z, dt, decay, drive, b_in, c_out = _chunk_inputs(
            x_b, offs, proj_k, wdt_rows, bias, a_coef, chan_ok, pos, step_ok, RS, R,
            RP, BD, BL, DT_DOT, RB)
        gy = tl.load(gy_b + offs, mask=tile_ok, other=0.0)

        # grad_h[l] = C[l] * gy[l] + decay[l+1] * grad_h[l+1] (steps in visiting order), the
        # step visited last taking the carry: a scan of adjoint summaries against the visiting
        # order (see _adjoint_combine; shifting the decays by one column with tl.gather instead
        # cost 17% of the core's forward+backward at stage 1).
        g_out = c_out * gy + tl.where(last_col, carry[:, None], 0.0)
        _, _, g_h = tl.associative_scan((decay, tl.full([BD, BL], 1.0, tl.float32), g_out), 1,
                                        _adjoint_combine, reverse=not REVERSE)
        carry = _edge_column(decay * g_h, cols, False, REVERSE, BL)

        if not SUMMARY:
            h0 = tl.load(state_rows + j, mask=chan_ok, other=0.0)
            decay_cum, h_local = tl.associative_scan((decay, drive), 1, _affine_combine,
                                                     reverse=REVERSE)
            h_all = h_local + decay_cum * h0[:, None]
            decayed_prev = h_all - drive  # decay[l] * h[l-1]
            g_dt = g_h * (a_coef[:, None] * decayed_prev + b_in * u)
            g_z = tl.where(tile_ok, g_dt * tl.sigmoid(z), 0.0)
            g_u = skip[:, None] * gy + g_h * dt * b_in
            _merge(gx_b + offs, g_u, tile_ok, MERGE)

            g_skip += tl.sum(gy * u, axis=1)
            g_a += tl.sum(g_h * decayed_prev * dt, axis=1)
            g_bias += tl.sum(g_z, axis=1)
            g_b = tl.sum(g_h * dt * u, axis=0)
            g_c = tl.sum(gy * h_all, axis=0)
            tl.atomic_add(gproj_k + R * RS + pos, g_b, mask=step_ok, sem='relaxed')
            tl.atomic_add(gproj_k + (R + 1) * RS + pos, g_c, mask=step_ok, sem='relaxed')
            # Zeros in the padding columns too (chunks span whole multiples of 16 >= S).
            tl.store(gz_k + offs, g_z.to(gz_ptr.dtype.element_ty),
                     mask=chan_ok[:, None] & (pos < S)[None, :])

    if SUMMARY:
        tl.store(seg_carry_ptr + seg_base + seg * D, carry, mask=chan_ok)
    else:
        # Rows of gchan (3, B, K, NSEG, D): bias, A_logs (dA/dA_logs = A), Ds.
        row = tl.num_programs(1) * 4 * NSEG * D
        chan_part = gchan_ptr + ((b * 4 + k) * NSEG + seg) * D + chans
        tl.store(chan_part, g_bias, mask=chan_ok)
        tl.store(chan_part + row, g_a * a_coef, mask=chan_ok)
        tl.store(chan_part + 2 * row, g_skip, mask=chan_ok)


@triton.jit
def ss2d_scan_bwd_kernel(xs_ptr, proj_ptr, wdt_ptr, bias_ptr, a_ptr, ds_ptr, gys_ptr,
                         states_ptr, seg_decay_ptr, seg_carry_ptr, gxs_ptr, gz_ptr, gproj_ptr,
                         gchan_ptr,
                         D, L, S, NCH, NSEG, SEG_CH, R: tl.constexpr, RP: tl.constexpr,
                         BD: tl.constexpr, BL: tl.constexpr, DT_DOT: tl.constexpr, RB: tl.constexpr,
                         NS: tl.constexpr, SUMMARY: tl.constexpr, PAIRED: tl.constexpr):
    """Backward of :func:`ss2d_scan_fwd_kernel`, walking each segment's chunks in reverse.

    Each chunk's states are recomputed from the saved chunk-entry state. ``SUMMARY=True`` only
    writes each segment's outgoing state gradient from a zero incoming one (``seg_carry``).
    Otherwise: ``gxs (2, D, B, S)`` (fp32, image-minor; the two scan orders, as ``xs``; the
    output gradient ``gys`` likewise) receives the scan's input gradient, rows B, C of
    ``gproj (4, R+2, B, S)`` (image-minor, slots as ``proj``) theirs; ``gz (4, D, B, S)``
    (image-minor, in ``xs``'s dtype), by ``proj`` slot, gets the gradient of ``delta + bias``
    in direction order, zeros in its padding columns (the caller turns it into the dt_low and
    dt-weight gradients with two GEMMs); ``gchan (3, B, K, NSEG, D)`` (rows: bias, A_logs, Ds;
    by direction) holds per-program partial sums.

    ``PAIRED`` as in the forward (1: directions ``p`` then ``p + 2`` per program, storing and
    then adding ``gxs``, no zeroing needed; 2, 3: the two launches of a split pair; 0: grid
    ``(cdiv(D, BD), B, 4 * NSEG)`` and atomic adds into a zeroed ``gxs``). The B and C rows of
    ``gproj`` (zeroed by the caller) always take atomic adds (summed over channels).
    """
    b, chans, chan_ok = _program_channels(D, BD)
    if PAIRED != 0:
        k = tl.program_id(2)
        if PAIRED != 3:  # 1: both directions in turn; 2: the first launch of a split pair
            _scan_direction_bwd(k, 0, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr,
                                a_ptr, ds_ptr, gys_ptr, states_ptr, seg_decay_ptr, seg_carry_ptr,
                                gxs_ptr, gz_ptr, gproj_ptr, gchan_ptr, D, L, S, NCH, NSEG, SEG_CH,
                                R, RP, BD, BL, DT_DOT, RB, NS, False, 1, False)
        if PAIRED == 1:
            tl.debug_barrier()  # the second direction reads what other threads stored
        if PAIRED != 2:  # 1, or 3: the second launch of a split pair
            _scan_direction_bwd(k + 2, 0, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr,
                                bias_ptr, a_ptr, ds_ptr, gys_ptr, states_ptr, seg_decay_ptr,
                                seg_carry_ptr, gxs_ptr, gz_ptr, gproj_ptr, gchan_ptr, D, L, S,
                                NCH, NSEG, SEG_CH, R, RP, BD, BL, DT_DOT, RB, NS, False, 2, True)
    else:
        k = tl.program_id(2) // NSEG
        seg = tl.program_id(2) % NSEG
        if k >= 2:
            _scan_direction_bwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr,
                                a_ptr, ds_ptr, gys_ptr, states_ptr, seg_decay_ptr, seg_carry_ptr,
                                gxs_ptr, gz_ptr, gproj_ptr, gchan_ptr, D, L, S, NCH, NSEG, SEG_CH,
                                R, RP, BD, BL, DT_DOT, RB, NS, SUMMARY, 0, True)
        else:
            _scan_direction_bwd(k, seg, b, chans, chan_ok, xs_ptr, proj_ptr, wdt_ptr, bias_ptr,
                                a_ptr, ds_ptr, gys_ptr, states_ptr, seg_decay_ptr, seg_carry_ptr,
                                gxs_ptr, gz_ptr, gproj_ptr, gchan_ptr, D, L, S, NCH, NSEG, SEG_CH,
                                R, RP, BD, BL, DT_DOT, RB, NS, SUMMARY, 0, False)
