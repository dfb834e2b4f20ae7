"""``MM_VSSM``: the reference repository's backbone type, a drop-in for its mmdet/mmseg configs."""
from __future__ import annotations

from typing import Sequence, Union

from mmengine.logging import MMLogger

from mmvmamba.registry import MODELS

from .vmamba import VMamba

#: Reference arguments whose only supported value is the published one.
FIXED_ARGS = dict(forward_type='v05_noz', norm_layer='ln2d', downsample_version='v3',
                  patchembed_version='v2', ssm_act_layer='silu', mlp_act_layer='gelu',
                  gmlp=False, ssm_init='v0', ssm_drop_rate=0.0, mlp_drop_rate=0.0,
                  patch_norm=True, posembed=False)


@MODELS.register_module()
class MM_VSSM(VMamba):  # noqa: N801  (the reference's type name, kept for its configs)
    """The reference repository's ``MM_VSSM`` backbone, built as a :class:`VMamba`.

    Accepts the keyword arguments of the reference detection/segmentation configs and builds
    the same network (same state-dict keys). Those configs merge into mmdet's Swin backbone
    dict, so Swin's arguments (``embed_dims``, ``num_heads``, ``window_size``, ``qkv_bias``,
    ``convert_weights``, its ``init_cfg`` pointing at Swin weights, ...) arrive too: the
    reference ignored them silently; here they are dropped with one warning that lists them.
    Weights come only from ``pretrained``.

    Args:
        dims (int | Sequence[int]): Stage widths, or C meaning (C, 2C, 4C, 8C). Defaults to 96.
        depths (Sequence[int]): Blocks per stage. Defaults to (2, 2, 9, 2).
        ssm_d_state (int): State size N. Defaults to 16.
        ssm_ratio (float): SS2D inner width ratio. Defaults to 2.0.
        ssm_dt_rank (int | str): Delta rank, 'auto' = ceil(C / 16). Defaults to 'auto'.
        ssm_conv (int): Depthwise kernel size. Defaults to 3.
        ssm_conv_bias (bool): Depthwise conv bias. Defaults to True.
        mlp_ratio (float): MLP hidden ratio. Defaults to 4.0.
        drop_path_rate (float): Stochastic-depth rate. Defaults to 0.1.
        out_indices (Sequence[int]): Output stages. Defaults to (0, 1, 2, 3).
        pretrained (str, optional): Checkpoint path; ``''`` or None loads nothing.
        use_checkpoint (bool): Gradient checkpointing (the reference's name for ``with_cp``).
            Defaults to False.
        forward_type, norm_layer, downsample_version, patchembed_version, ssm_act_layer,
        mlp_act_layer, gmlp, ssm_init, ssm_drop_rate, mlp_drop_rate, patch_norm, posembed:
            Only the published values (:data:`FIXED_ARGS`) are supported, and are the
            defaults; anything else raises.
        **kwargs: Leftovers of a merged Swin config: dropped with a warning.
    """

    def __init__(self,
                 dims: Union[int, Sequence[int]] = 96,
                 depths: Sequence[int] = (2, 2, 9, 2),
                 ssm_d_state: int = 16,
                 ssm_ratio: float = 2.0,
                 ssm_dt_rank: Union[int, str] = 'auto',
                 ssm_conv: int = 3,
                 ssm_conv_bias: bool = True,
                 mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 pretrained: str | None = None,
                 use_checkpoint: bool = False,
                 **kwargs) -> None:
        fixed = {name: kwargs.pop(name) for name in FIXED_ARGS if name in kwargs}
        wrong = {name: value for name, value in fixed.items() if value != FIXED_ARGS[name]}
        if wrong:
            raise ValueError(
                'MM_VSSM supports only the published VMamba (' +
                ', '.join(f'{k}={v!r}' for k, v in FIXED_ARGS.items()) + '); got ' +
                ', '.join(f'{k}={v!r}' for k, v in wrong.items()))
        if kwargs:
            MMLogger.get_current_instance().warning(
                f'MM_VSSM: ignoring arguments it does not take (leftovers of a merged Swin '
                f'config, ignored by the reference too): {sorted(kwargs)}')
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f'pretrained must be a path, "" or None, got {pretrained!r}')
        init_cfg = dict(type='Pretrained', checkpoint=pretrained) if pretrained else None
        arch = dict(dims=dims if isinstance(dims, int) else tuple(dims), depths=tuple(depths),
                    ssm_ratio=ssm_ratio, ssm_d_state=ssm_d_state, ssm_dt_rank=ssm_dt_rank,
                    ssm_conv=ssm_conv, ssm_conv_bias=ssm_conv_bias, mlp_ratio=mlp_ratio)
        super().__init__(arch=arch, out_indices=out_indices, drop_path_rate=drop_path_rate,
                         with_cp=use_checkpoint, init_cfg=init_cfg)
