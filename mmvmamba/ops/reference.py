"""Pure-PyTorch reference implementations of mmvmamba's ops.

This module is the definition every faster backend is tested against. It is written to be read:
each function follows one step of the SS2D description in the VMamba spec. The selective scan is
vectorised with a two-level (chunked) recurrence so that CPU tests of whole backbones stay fast,
while computing exactly the fp32 recurrence ``h_l = exp(dt_l * A) * h_{l-1} + dt_l * B_l * u_l``
up to float rounding.

Shapes use ``B`` batch, ``K`` scan directions (groups), ``Cg`` channels per group, ``N`` state
size, ``L`` sequence length, ``R`` dt rank.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['selective_scan', 'cross_scan', 'cross_merge', 'layer_norm_2d', 'ss2d_core']


def _linear_recurrence(decay_log: Tensor, inputs: Tensor) -> Tensor:
    """Solve ``h_l = exp(decay_log_l) * h_{l-1} + inputs_l`` along the last dim, ``h_{-1} = 0``.

    Two-level scan: the sequence is cut into ``ceil(sqrt(L))``-long chunks; a short Python loop
    runs the recurrence inside all chunks at once, a second loop carries each chunk's final state
    into the next, and one vectorised correction adds the carried state, decayed by the
    cumulative decay inside the chunk. About ``2 * sqrt(L)`` small steps instead of ``L``.

    Args:
        decay_log (Tensor): ``(..., L)`` fp32 log-decay per step (``dt * A``).
        inputs (Tensor): ``(..., L)`` fp32 input per step (``dt * B * u``).

    Returns:
        Tensor: ``(..., L)`` fp32 states ``h``.
    """
    length = inputs.shape[-1]
    chunk = max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
    num_chunks = -(-length // chunk)
    pad = num_chunks * chunk - length
    if pad:
        # Padded steps decay by exp(0) = 1 with zero input; they are dropped at the end.
        decay_log = F.pad(decay_log, (0, pad))
        inputs = F.pad(inputs, (0, pad))
    lead = inputs.shape[:-1]
    decay_log = decay_log.reshape(*lead, num_chunks, chunk)
    inputs = inputs.reshape(*lead, num_chunks, chunk)

    # 1) The recurrence inside every chunk, each started from a zero state. Steps are taken
    #    with unbind (not indexing) so that autograd's backward stays O(L).
    decay_steps = decay_log.movedim(-1, 0).exp().contiguous().unbind(0)  # chunk x (..., nc)
    input_steps = inputs.movedim(-1, 0).contiguous().unbind(0)
    state = input_steps[0]
    local = [state]
    for t in range(1, chunk):
        state = decay_steps[t] * state + input_steps[t]
        local.append(state)
    chunk_ends = state.movedim(-1, 0).unbind(0)  # num_chunks x (...)
    local_states = torch.stack(local, dim=-1)  # (..., num_chunks, chunk)

    # 2) The true state entering each chunk: carry chunk ends forward.
    chunk_decay = decay_log.sum(dim=-1).exp().movedim(-1, 0).unbind(0)  # total decay per chunk
    carry = torch.zeros_like(chunk_ends[0])
    carries = [carry]
    for c in range(1, num_chunks):
        carry = chunk_decay[c - 1] * carry + chunk_ends[c - 1]
        carries.append(carry)
    carry_in = torch.stack(carries, dim=-1)  # (..., num_chunks)

    # 3) Add the carried state, decayed from the chunk start to each position.
    decay_from_start = decay_log.cumsum(dim=-1).exp()
    states = local_states + decay_from_start * carry_in.unsqueeze(-1)
    return states.reshape(*lead, num_chunks * chunk)[..., :length]


def selective_scan(u: Tensor,
                   delta: Tensor,
                   A: Tensor,
                   B: Tensor,
                   C: Tensor,
                   D: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = True) -> Tensor:
    """Selective scan (spec, SS2D step 7), computed in fp32.

    For batch ``b``, channel ``c`` in group ``k = c // Cg`` and state index ``n``::

        dt_l = softplus(delta_l + delta_bias_c)      (if delta_softplus; else delta_l + bias)
        h_l  = exp(dt_l * A_cn) * h_{l-1} + dt_l * B_kn,l * u_l,   h_{-1} = 0
        y_l  = sum_n C_kn,l * h_l + D_c * u_l

    Args:
        u (Tensor): ``(B, K*Cg, L)`` input, fp32/fp16/bf16.
        delta (Tensor): ``(B, K*Cg, L)`` step sizes before bias/softplus, same dtypes as ``u``.
        A (Tensor): ``(K*Cg, N)`` state matrix (diagonal), fp32.
        B (Tensor): ``(B, K, N, L)`` input projection, shared by the ``Cg`` channels of a group.
        C (Tensor): ``(B, K, N, L)`` output projection, shared like ``B``.
        D (Tensor, optional): ``(K*Cg,)`` skip weight, fp32. Default: None (no skip).
        delta_bias (Tensor, optional): ``(K*Cg,)`` bias added to ``delta``, fp32. Default: None.
        delta_softplus (bool): Apply softplus (beta 1, threshold 20) to ``delta``. Default: True.

    Returns:
        Tensor: ``(B, K*Cg, L)`` fp32 output.
    """
    batch, channels, length = u.shape
    groups, state_size = B.shape[1], B.shape[2]
    if channels % groups:
        raise ValueError(f'selective_scan: channels ({channels}) of u must be divisible by the '
                         f'groups K ({groups}) of B {tuple(B.shape)}')
    u = u.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    per_group = channels // groups

    def per_channel(proj: Tensor) -> Tensor:
        """``(B, K, N, L)`` -> ``(B, K*Cg, N, L)``, repeating each group's rows ``Cg`` times."""
        proj = proj.float().unsqueeze(2).expand(batch, groups, per_group, state_size, length)
        return proj.reshape(batch, channels, state_size, length)

    decay_log = dt.unsqueeze(2) * A.float()[None, :, :, None]  # (B, K*Cg, N, L)
    inputs = (dt * u).unsqueeze(2) * per_channel(B)  # (B, K*Cg, N, L)
    states = _linear_recurrence(decay_log, inputs)
    y = (states * per_channel(C)).sum(dim=2)  # (B, K*Cg, L)
    if D is not None:
        y = y + D.float()[:, None] * u
    return y


def cross_scan(x: Tensor) -> Tensor:
    """Unfold a map into the four scan directions (spec, SS2D step 3).

    Direction 0 is row-major (``l = h*W + w``), 1 column-major (``l = w*H + h``), 2 and 3 are
    0 and 1 reversed.

    Args:
        x (Tensor): ``(B, C, H, W)``.

    Returns:
        Tensor: ``(B, 4, C, H*W)``.
    """
    row_major = x.flatten(2)
    col_major = x.transpose(2, 3).flatten(2)
    return torch.stack([row_major, col_major, row_major.flip(-1), col_major.flip(-1)], dim=1)


def cross_merge(y: Tensor, H: int, W: int) -> Tensor:
    """Sum the four directions back onto the row-major map (spec, SS2D step 8).

    ``y_out[h*W + w] = y0[p] + y2[L-1-p] + y1[q] + y3[L-1-q]`` with ``p = h*W + w``,
    ``q = w*H + h``.

    Args:
        y (Tensor): ``(B, 4, C, H*W)``, directions ordered as :func:`cross_scan` makes them.
        H (int): Map height.
        W (int): Map width.

    Returns:
        Tensor: ``(B, C, H, W)``.
    """
    batch, directions, channels, length = y.shape
    if directions != 4 or length != H * W:
        raise ValueError(f'cross_merge expects (B, 4, C, H*W) with H*W = {H * W}, got '
                         f'{tuple(y.shape)}')
    row_major = y[:, 0] + y[:, 2].flip(-1)
    col_major = y[:, 1] + y[:, 3].flip(-1)
    col_major = col_major.reshape(batch, channels, W, H).transpose(2, 3)
    return row_major.reshape(batch, channels, H, W) + col_major


def layer_norm_2d(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  eps: float = 1e-5) -> Tensor:
    """Channel-first LayerNorm: normalise over ``C`` at every pixel.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        weight (Tensor, optional): ``(C,)`` scale.
        bias (Tensor, optional): ``(C,)`` shift.
        eps (float): Variance epsilon. Default: 1e-5.

    Returns:
        Tensor: ``(B, C, H, W)`` (channels-last memory layout), dtype as ``F.layer_norm`` gives.
    """
    out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps)
    return out.permute(0, 3, 1, 2)


def ss2d_core(x: Tensor,
              x_proj_weight: Tensor,
              dt_projs_weight: Tensor,
              dt_projs_bias: Tensor,
              A_logs: Tensor,
              Ds: Tensor,
              out_norm_weight: Tensor,
              out_norm_bias: Tensor,
              eps: float = 1e-5,
              *,
              scan_backend: Optional[str] = None) -> Tensor:
    """SS2D core, spec steps 3-9: cross-scan, projections, selective scan, merge, out-norm.

    The per-direction projections run as grouped 1-D convolutions (``groups=K``), so FLOP
    counters put them in the "conv" bucket as the reference implementation's count does.

    Args:
        x (Tensor): ``(B, Din, H, W)`` activation after the depthwise conv and SiLU.
        x_proj_weight (Tensor): ``(K, R+2N, Din)`` per-direction projection to (dt_low, B, C).
        dt_projs_weight (Tensor): ``(K, Din, R)`` per-direction dt projection.
        dt_projs_bias (Tensor): ``(K, Din)`` dt bias (used inside the scan, fp32).
        A_logs (Tensor): ``(K*Din, N)``; ``A = -exp(A_logs)``.
        Ds (Tensor): ``(K*Din,)`` skip weights.
        out_norm_weight (Tensor): ``(Din,)`` output LayerNorm scale.
        out_norm_bias (Tensor): ``(Din,)`` output LayerNorm shift.
        eps (float): Output LayerNorm epsilon. Default: 1e-5.
        scan_backend (str, optional): Backend for :func:`mmvmamba.ops.selective_scan`.

    Returns:
        Tensor: ``(B, Din, H, W)`` in ``x.dtype``.
    """
    from mmvmamba import ops  # the public API resolves the scan backend

    batch, inner, height, width = x.shape
    directions, proj_dim, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    state_size = A_logs.shape[1]
    if proj_dim != rank + 2 * state_size:
        raise ValueError(f'ss2d_core: x_proj_weight has {proj_dim} outputs per direction, '
                         f'expected dt_rank + 2 * d_state = {rank} + 2 * {state_size}')
    length = height * width

    xs = ops.cross_scan(x).reshape(batch, directions * inner, length)
    x_dbl = F.conv1d(xs, x_proj_weight.reshape(directions * proj_dim, inner, 1),
                     groups=directions)
    x_dbl = x_dbl.reshape(batch, directions, proj_dim, length)
    dt_low, B, C = torch.split(x_dbl, [rank, state_size, state_size], dim=2)
    delta = F.conv1d(dt_low.reshape(batch, directions * rank, length),
                     dt_projs_weight.reshape(directions * inner, rank, 1), groups=directions)

    ys = ops.selective_scan(
        xs, delta, -A_logs.float().exp(), B, C,
        D=Ds.float(), delta_bias=dt_projs_bias.reshape(-1).float(), delta_softplus=True,
        backend=scan_backend)
    y = ops.cross_merge(ys.reshape(batch, directions, inner, length), height, width)
    y = ops.layer_norm_2d(y, out_norm_weight.float(), out_norm_bias.float(), eps)
    return y.to(x.dtype)
