"""An mmdet RoI extractor that works under bf16 mixed precision.

mmcv 2.1.0's ``roi_align`` has fp32/fp64 (CPU) and fp32/fp16 (CUDA) kernels only, so any mmdet
two-stage detector trained with ``--amp`` and ``optim_wrapper.dtype=bfloat16`` stops at its first
RoI with ``"roi_align_forward_cuda_kernel" not implemented for 'BFloat16'``, whatever the
backbone. :class:`BF16SafeRoIExtractor` is mmdet's ``SingleRoIExtractor`` that pools bf16
feature maps in fp32. This module imports mmdet, so ``import mmvmamba`` does not load it; a config
asks for it::

    custom_imports = dict(imports=['mmvmamba', 'mmvmamba.models.roi_extractors'],
                          allow_failed_imports=False)
    model = dict(roi_head=dict(bbox_roi_extractor=dict(type='BF16SafeRoIExtractor'),
                               mask_roi_extractor=dict(type='BF16SafeRoIExtractor')))
"""
from __future__ import annotations

import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS


@MODELS.register_module()
class BF16SafeRoIExtractor(SingleRoIExtractor):
    """``SingleRoIExtractor`` that pools bf16 features in fp32 (mmcv has no bf16 roi_align).

    Takes the arguments of mmdet's ``SingleRoIExtractor`` (``roi_layer``, ``out_channels``,
    ``featmap_strides``, ``finest_scale``, ``init_cfg``). fp32 and fp16 features take the parent's
    path unchanged.
    """

    def forward(self, feats: tuple[torch.Tensor, ...], rois: torch.Tensor,
                roi_scale_factor: float | None = None) -> torch.Tensor:
        """Pool each RoI from its pyramid level.

        Args:
            feats: Pyramid levels ``(B, C, H_l, W_l)``, finest first.
            rois: ``(n, 5)`` boxes ``(batch_index, x1, y1, x2, y2)`` in input pixels.
            roi_scale_factor: Optional scale applied to the boxes first.

        Returns:
            ``(n, C, *output_size)``: fp32 when ``feats`` are bf16, else ``feats``' dtype.
        """
        if feats[0].dtype == torch.bfloat16:
            feats = tuple(f.float() for f in feats)
        return super().forward(feats, rois, roi_scale_factor)
