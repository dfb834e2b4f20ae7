"""VMamba backbone (NeurIPS 2024), channel-first, checkpoint-compatible with the reference."""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Sequence, Union

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import nn

from mmvmamba.registry import MODELS
from mmvmamba.utils.checkpoint import load_pretrained_backbone

from ..layers import LayerNorm2d, VSSBlock

#: The published models (spec, "The three released models"). ``dims`` may also be an int C,
#: meaning ``(C, 2C, 4C, 8C)``.
ARCH_SETTINGS: dict[str, dict] = {
    'tiny': dict(dims=(96, 192, 384, 768), depths=(2, 2, 8, 2), ssm_ratio=1.0, ssm_d_state=1,
                 ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0),
    'small': dict(dims=(96, 192, 384, 768), depths=(2, 2, 15, 2), ssm_ratio=2.0, ssm_d_state=1,
                  ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0),
    'base': dict(dims=(128, 256, 512, 1024), depths=(2, 2, 15, 2), ssm_ratio=2.0,
                 ssm_d_state=1, ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False,
                 mlp_ratio=4.0),
}
ARCH_FIELDS = ('dims', 'depths', 'ssm_ratio', 'ssm_d_state', 'ssm_dt_rank', 'ssm_conv',
               'ssm_conv_bias', 'mlp_ratio')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Turn ``arch`` (a name or a dict of :data:`ARCH_FIELDS`) into a checked settings dict.

    Returns:
        dict: The settings, with ``dims`` and ``depths`` as tuples of equal length.
    """
    if isinstance(arch, str):
        if arch not in ARCH_SETTINGS:
            raise ValueError(f'Unknown VMamba arch {arch!r}; choose one of '
                             f'{sorted(ARCH_SETTINGS)} or pass a dict with the fields '
                             f'{list(ARCH_FIELDS)}')
        settings = copy.deepcopy(ARCH_SETTINGS[arch])
    elif isinstance(arch, dict):
        missing = [f for f in ARCH_FIELDS if f not in arch]
        extra = [f for f in arch if f not in ARCH_FIELDS]
        if missing or extra:
            raise ValueError(f'A custom VMamba arch dict needs exactly the fields '
                             f'{list(ARCH_FIELDS)}; missing {missing}, unknown {extra}')
        settings = dict(arch)
    else:
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
    depths = tuple(settings['depths'])
    if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f'depths must be a non-empty sequence of positive ints, got {depths!r}')
    dims = settings['dims']
    if isinstance(dims, int) and not isinstance(dims, bool):
        dims = tuple(dims * 2**i for i in range(len(depths)))
    dims = tuple(dims)
    if len(dims) != len(depths) or any(not isinstance(d, int) or d < 2 for d in dims):
        raise ValueError(f'dims must be an int or {len(depths)} ints >= 2 (one per stage), '
                         f'got {settings["dims"]!r}')
    if dims[0] % 2:
        raise ValueError(f'dims[0] must be even (the stem halves it), got {dims[0]}')
    settings.update(dims=dims, depths=depths)
    return settings


def _conv3x3_s2(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 conv, stride 2, padding 1 (maps a spatial size s to ceil(s / 2)), with bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)


def build_stem(in_channels: int, embed_dims: int) -> nn.Sequential:
    """Patch embed, stride 4: conv -> LN2d -> GELU -> conv -> LN2d.

    Numbered ``0, 2, 4, 5, 7`` as in the reference (whose channel-last variant has permutes
    in between), so the state-dict keys are ``patch_embed.{0,2,5,7}.*``.
    """
    return nn.Sequential(OrderedDict([
        ('0', _conv3x3_s2(in_channels, embed_dims // 2)),
        ('2', LayerNorm2d(embed_dims // 2)),
        ('4', nn.GELU()),
        ('5', _conv3x3_s2(embed_dims // 2, embed_dims)),
        ('7', LayerNorm2d(embed_dims)),
    ]))


def build_downsample(in_channels: int, out_channels: int) -> nn.Sequential:
    """Downsample between stages: conv 3x3 s2 -> LN2d, keys ``downsample.{1,3}.*``."""
    return nn.Sequential(OrderedDict([
        ('1', _conv3x3_s2(in_channels, out_channels)),
        ('3', LayerNorm2d(out_channels)),
    ]))


class VMambaStage(nn.Module):
    """``depth`` VSS blocks at one width, then (stages 0..n-2) a downsample.

    Args:
        blocks (list[VSSBlock]): The blocks, in order.
        downsample (nn.Module, optional): The downsample after the blocks, or None.
    """

    def __init__(self, blocks: list[VSSBlock], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks on ``(B, C, H, W)``; the stage feature, before the downsample.

        The caller applies ``downsample`` (``(B, C, H, W)`` -> ``(B, C', ceil(H/2),
        ceil(W/2))``) only when a later stage needs it.
        """
        for block in self.blocks:
            x = block(x)
        return x


@MODELS.register_module()
class VMamba(BaseModule):
    """VMamba: Visual State Space Model.

    A PyTorch implementation of `VMamba: Visual State Space Model
    <https://arxiv.org/abs/2401.10166>`_ (NeurIPS 2024), the published "v2" models (SS2D without
    z-gate, d_state 1, LayerNorm, conv stem and downsamples). Channel-first ``(B, C, H, W)``
    shapes throughout, kept channels-last in memory (the returned features are contiguous
    NCHW); any input size (strides 4, 8, 16, 32, rounding up).

    The parameter names are those of the reference ``Backbone_VSSM``, so its checkpoints load
    1:1. Released checkpoints (ImageNet ``model``/``model_ema``, mmdet/mmseg ``state_dict`` with
    ``backbone.``, older key names, converted files) are recognised and converted when loaded
    through ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``; loading is strict (see
    :func:`mmvmamba.utils.checkpoint.load_pretrained_backbone`).

    Args:
        arch (str | dict): 'tiny', 'small', 'base', or a dict with the fields ``dims``,
            ``depths``, ``ssm_ratio``, ``ssm_d_state``, ``ssm_dt_rank``, ``ssm_conv``,
            ``ssm_conv_bias``, ``mlp_ratio``. Defaults to 'tiny'.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (Sequence[int]): Stages whose features are returned, each through its own
            LayerNorm ``outnorm{i}``; negative indices count from the end. Defaults to
            (0, 1, 2, 3). Stages after the last index are not run.
        drop_path_rate (float): Stochastic-depth rate, increasing linearly from 0 over all
            blocks. Defaults to 0.1 (the published ImageNet runs used 0.2 / 0.3 / 0.6).
        frozen_stages (int): -1 freezes nothing; 0 freezes the patch embed; i >= 1 also stages
            0..i-1 with their downsamples and output norms (as mmdet's Swin). Defaults to -1.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        scan_backend (str, optional): Selective-scan backend for every SS2D
            (see :mod:`mmvmamba.ops`); None follows ``MMVMAMBA_SCAN_BACKEND``.
        core_backend (str, optional): SS2D-core backend for every SS2D; None follows
            ``MMVMAMBA_SS2D_BACKEND``.
        init_cfg (dict | list[dict], optional): Initialisation config. ``dict(type='Pretrained',
            checkpoint=PATH, prefix=None, use_ema=False)`` loads a checkpoint (``use_ema`` picks
            ``model_ema`` of an ImageNet checkpoint). Defaults to None (the spec's init, done at
            construction).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 scan_backend: str | None = None,
                 core_backend: str | None = None,
                 init_cfg: Union[dict, list] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        settings = resolve_arch(arch)
        self.arch_settings = settings
        self.dims = settings['dims']
        self.depths = settings['depths']
        self.num_stages = len(self.depths)
        self.out_indices = self._check_out_indices(out_indices, self.num_stages)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], '
                             f'got {frozen_stages}')
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        self.patch_embed = build_stem(in_channels, self.dims[0])
        # torch.linspace's float32 values, as the reference; on CPU even under torch.device('meta').
        rates = torch.linspace(0, float(drop_path_rate), sum(self.depths), device='cpu').tolist()
        stages = []
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths)):
            first = sum(self.depths[:i])
            blocks = [
                VSSBlock(dim, drop_path_rate=rates[first + j],
                         ssm_ratio=settings['ssm_ratio'], ssm_d_state=settings['ssm_d_state'],
                         ssm_dt_rank=settings['ssm_dt_rank'], ssm_conv=settings['ssm_conv'],
                         ssm_conv_bias=settings['ssm_conv_bias'],
                         mlp_ratio=settings['mlp_ratio'], with_cp=with_cp,
                         scan_backend=scan_backend, core_backend=core_backend)
                for j in range(depth)
            ]
            downsample = (build_downsample(dim, self.dims[i + 1])
                          if i < self.num_stages - 1 else None)
            stages.append(VMambaStage(blocks, downsample))
        self.layers = nn.ModuleList(stages)
        for i in self.out_indices:
            self.add_module(f'outnorm{i}', LayerNorm2d(self.dims[i]))
        self._freeze_stages()

    @staticmethod
    def _check_out_indices(out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        indices = []
        for index in out_indices:
            if isinstance(index, bool) or not isinstance(index, int) or not (
                    -num_stages <= index < num_stages):
                raise ValueError(f'out_indices must be ints in [{-num_stages}, {num_stages - 1}],'
                                 f' got {tuple(out_indices)!r}')
            indices.append(index % num_stages)
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f'out_indices must be non-empty and without repeats, got '
                             f'{tuple(out_indices)!r}')
        return tuple(sorted(indices))

    def _freeze_stages(self) -> None:
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        for i in range(self.frozen_stages):
            frozen.append(self.layers[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'outnorm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> VMamba:
        """Set train/eval mode, keeping the frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint if it is a ``Pretrained`` one.

        Without a ``Pretrained`` init_cfg the weights keep the spec's initialisation, done when
        the layers were built; any other ``init_cfg`` is handed to mmengine.
        """
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            unknown = set(cfg) - {'type', 'checkpoint', 'prefix', 'use_ema', 'map_location'}
            if unknown or 'checkpoint' not in cfg:
                raise ValueError(
                    f"VMamba's Pretrained init_cfg takes checkpoint (required), prefix, use_ema "
                    f'and map_location; got {sorted(cfg)}')
            load_pretrained_backbone(
                self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                use_ema=cfg.get('use_ema', False), map_location=cfg.get('map_location', 'cpu'))
            self._is_init = True
            return
        if isinstance(cfg, (list, tuple)) and any(
                isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfg):
            raise ValueError("Give VMamba's Pretrained init_cfg as a single dict, not in a list "
                             '(a list would go to mmengine, which neither converts reference '
                             'checkpoints nor loads strictly)')
        if cfg is not None:
            super().init_weights()
            return
        MMLogger.get_current_instance().debug(
            'VMamba: no init_cfg, keeping the initialisation done at construction')

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features of the stages in ``out_indices``.

        Args:
            x (Tensor): Images ``(B, in_channels, H, W)``.

        Returns:
            tuple[Tensor]: For each index i in ``out_indices``, ``(B, dims[i], H_i, W_i)`` with
            ``H_i = ceil(H / 2**(i + 2))`` (likewise W_i), after ``outnorm{i}``, contiguous.
        """
        # Channels-last memory from here on: the 1x1 projections are GEMMs on the (B, H, W, C)
        # view (no layout copies), and the depthwise and strided convs run cuDNN's NHWC kernels.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        outs = []
        last = self.out_indices[-1]
        for i, stage in enumerate(self.layers[:last + 1]):
            x = stage(x)
            if i in self.out_indices:
                # Contiguous NCHW, as every OpenMMLab backbone returns: the norm may hand back a
                # channels-last-strided view, and mmcv's roi_align (CPU and CUDA) reads its input
                # as raw NCHW memory, ignoring strides, so the RoI heads would see scrambled
                # features (and convs would carry the channels-last layout into the neck).
                outs.append(getattr(self, f'outnorm{i}')(x).contiguous())
            if i < last:
                x = stage.downsample(x)
        return tuple(outs)
