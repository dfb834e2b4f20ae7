"""BF16SafeRoIExtractor: bf16 features pool in fp32 (mmcv's roi_align has no bf16 kernel)."""
import pytest
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

from mmvmamba.models.roi_extractors import BF16SafeRoIExtractor

CFG = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2), out_channels=8,
           featmap_strides=[4, 8, 16, 32])


def _inputs():
    torch.manual_seed(0)
    feats = tuple(torch.randn(2, 8, 64 // s, 96 // s) for s in (4, 8, 16, 32))
    # small, medium and large boxes, so several pyramid levels are used
    rois = torch.tensor([[0, 2., 3., 20., 30.], [1, 10., 5., 90., 60.], [0, 0., 0., 95., 63.],
                         [1, 40., 20., 52., 33.]])
    return feats, rois


def test_bf16_features_pool_in_fp32_like_the_stock_extractor():
    feats, rois = _inputs()
    bf16 = tuple(f.bfloat16().requires_grad_() for f in feats)
    with pytest.raises(RuntimeError, match='BFloat16'):
        SingleRoIExtractor(**CFG)(bf16, rois)  # the limitation this class exists for
    out = BF16SafeRoIExtractor(**CFG)(bf16, rois)
    expected = SingleRoIExtractor(**CFG)(tuple(f.float() for f in bf16), rois)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    out.sum().backward()
    assert all(f.grad is not None and f.grad.dtype == torch.bfloat16 for f in bf16)


def test_fp32_features_take_the_stock_path():
    feats, rois = _inputs()
    torch.testing.assert_close(BF16SafeRoIExtractor(**CFG)(feats, rois),
                               SingleRoIExtractor(**CFG)(feats, rois), rtol=0, atol=0)
