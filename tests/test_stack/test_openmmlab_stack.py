"""The installed OpenMMLab stack works: mmcv ops, mmdet and mmseg models, config scopes."""
import textwrap

import pytest
import torch


def test_mmcv_has_compiled_ops():
    import mmcv
    import mmcv._ext  # noqa: F401  (an mmcv without ops is a broken install, not a skip)
    from mmcv.ops import nms, roi_align

    assert mmcv.__version__ == '2.1.0'
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # the second box overlaps the first (IoU 0.68) and is dropped

    feat = torch.arange(16.).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    out = roi_align(feat, rois, (1, 1), 1.0, 2, 'avg', False)
    # The mean of the bilinear samples of a linear ramp is the value at the box centre (1.5, 1.5).
    assert out.item() == pytest.approx(1.5 * 4 + 1.5, abs=1e-5)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_package_scope_base_config_loads(tmp_path):
    from mmengine.config import Config

    path = _write(tmp_path, 'cfg.py', """
        _base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
        custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)
        """)
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'MaskRCNN'
    assert cfg.model.backbone.type == 'ResNet'


def _build(cfg_text, tmp_path, scope):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, init_default_scope

    cfg = Config.fromfile(_write(tmp_path, 'model.py', cfg_text))
    if DefaultScope.get_current_instance() is None or \
            DefaultScope.get_current_instance().scope_name != scope:
        init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS.build(cfg.model)


def test_mmdet_mask_rcnn_loss_and_predict(tmp_path):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    model = _build("""
        _base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
        model = dict(backbone=dict(depth=18, init_cfg=None),
                     neck=dict(in_channels=[64, 128, 256, 512]))
        """, tmp_path, 'mmdet')
    torch.manual_seed(0)
    img = torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8)
    sample = DetDataSample(metainfo=dict(img_shape=(128, 160), ori_shape=(128, 160),
                                         scale_factor=(1.0, 1.0), pad_shape=(128, 160)))
    masks = torch.zeros(1, 128, 160, dtype=torch.uint8)
    masks[0, 20:80, 30:100] = 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[30., 20., 100., 80.]]),
                                       labels=torch.tensor([3]),
                                       masks=BitmapMasks(masks.numpy(), 128, 160))
    model.train()
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]), training=True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k and isinstance(v, torch.Tensor))
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.layer4[0].conv1.weight.grad is not None

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]), training=False)
        result = model(**data, mode='predict')[0]
    assert result.pred_instances.bboxes.shape[-1] == 4


def test_mmseg_upernet_loss_and_predict(tmp_path):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    model = _build("""
        _base_ = ['mmseg::_base_/models/upernet_r50.py']
        norm_cfg = dict(type='BN', requires_grad=True)
        model = dict(pretrained=None,
                     data_preprocessor=dict(size=(64, 64)),
                     backbone=dict(depth=18, norm_cfg=norm_cfg),
                     decode_head=dict(in_channels=[64, 128, 256, 512], channels=32,
                                      num_classes=5, norm_cfg=norm_cfg),
                     auxiliary_head=dict(in_channels=256, channels=16, num_classes=5,
                                         norm_cfg=norm_cfg))
        """, tmp_path, 'mmseg')
    model = revert_sync_batchnorm(model)
    torch.manual_seed(0)
    imgs = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(s)
    model.train()
    data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=imgs, data_samples=samples), training=False)
        result = model(**data, mode='predict')
    assert result[0].pred_sem_seg.data.shape == (1, 64, 64)
