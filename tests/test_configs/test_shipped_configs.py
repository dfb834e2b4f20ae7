"""Every shipped config: the paper's recipe on the stock OpenMMLab bases, and a model that builds
and runs loss + predict on a small image (CPU, reference backends)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

from mmvmamba.datasets import TOY_DET_CLASSES, TOY_DET_PALETTE, TOY_SEG_CLASSES, TOY_SEG_PALETTE

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
DET = {'maskrcnn_vmamba_t.py': 'tiny', 'maskrcnn_vmamba_s.py': 'small',
       'maskrcnn_vmamba_b.py': 'base', 'maskrcnn_vmamba_t_ms3x.py': 'tiny',
       'maskrcnn_vmamba_s_ms3x.py': 'small'}
SEG = {'upernet_vmamba_t_ade20k.py': 'tiny', 'upernet_vmamba_s_ade20k.py': 'small',
       'upernet_vmamba_b_ade20k.py': 'base'}
CLS = {'cls_vmamba_t_in1k.py': 'tiny', 'cls_vmamba_s_in1k.py': 'small',
       'cls_vmamba_b_in1k.py': 'base'}
TOY = ['toy/maskrcnn_vmamba_toy.py', 'toy/upernet_vmamba_toy.py']
#: The GPU validation pairs (full-size VMamba-T / Swin-T backbones on the toy tasks).
TOY_T = {'toy/maskrcnn_vmamba_t_toy.py': 'toy/maskrcnn_swin_t_toy.py',
         'toy/upernet_vmamba_t_toy.py': 'toy/upernet_swin_t_toy.py'}
DROP_PATH = {'tiny': 0.2, 'small': 0.3, 'base': 0.6}
WIDTHS = {'tiny': [96, 192, 384, 768], 'small': [96, 192, 384, 768],
          'base': [128, 256, 512, 1024]}
CHECKPOINTS = {'tiny': 'vssm1_tiny_0230s_ckpt_epoch_264.pth',
               'small': 'vssm_small_0229_ckpt_epoch_222.pth',
               'base': 'vssm_base_0229_ckpt_epoch_237.pth'}
SMALL_ARCH = dict(dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1, ssm_dt_rank='auto',
                  ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0)


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIGS / name))


def test_every_config_file_is_covered():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob('*.py')}
    assert shipped == (set(DET) | set(SEG) | set(CLS) | set(TOY) | set(TOY_T) |
                       set(TOY_T.values()))


@pytest.mark.parametrize('name', sorted(DET) + sorted(SEG))
def test_backbone_recipe(name):
    arch = {**DET, **SEG}[name]
    cfg = load(name)
    backbone = cfg.model.backbone
    assert backbone.type == 'VMamba' and backbone.arch == arch
    assert backbone.drop_path_rate == DROP_PATH[arch]
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=f'checkpoints/{CHECKPOINTS[arch]}')
    assert set(backbone) == {'type', 'arch', 'out_indices', 'drop_path_rate', 'init_cfg'}
    assert 'mmvmamba' in cfg.custom_imports.imports and not cfg.custom_imports.allow_failed_imports
    assert [h.type for h in cfg.custom_hooks] == ['RNGStateHook']
    # parameter groups as inherited: no decay on norms (A_logs / Ds keep the reference's decay)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['norm'] == dict(decay_mult=0.0)
    assert 'A_logs' not in cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    if name in DET:
        assert cfg.model.neck.in_channels == WIDTHS[arch]
        assert cfg.optim_wrapper.optimizer.lr == 1e-4
        assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    else:
        assert cfg.model.decode_head.in_channels == WIDTHS[arch]
        assert cfg.model.auxiliary_head.in_channels == WIDTHS[arch][2]
        assert cfg.model.decode_head.num_classes == 150
        assert cfg.optim_wrapper.optimizer.lr == 6e-5
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.model.data_preprocessor.size == (512, 512)


def _plain(obj):
    """A config value without the ``_scope_`` keys mmengine adds to package-scope bases."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _stock(tmp_path, base: str) -> Config:
    stub = tmp_path / 'stub.py'
    stub.write_text(f"_base_ = ['{base}']\n")
    return Config.fromfile(str(stub))


@pytest.mark.parametrize('name', ['maskrcnn_vmamba_t_ms3x.py', 'maskrcnn_vmamba_s_ms3x.py'])
def test_ms3x_recipe_is_mmdets(tmp_path, name):
    ours = load(name)
    stock = _stock(tmp_path, 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py')
    assert _plain(ours.train_dataloader.dataset.pipeline) == _plain(
        stock.train_dataloader.dataset.pipeline)
    assert _plain(ours.param_scheduler) == _plain(stock.param_scheduler)
    assert _plain(ours.train_cfg) == _plain(stock.train_cfg)
    assert ours.param_scheduler[1].milestones == [27, 33] and ours.train_cfg.max_epochs == 36
    assert ours.param_scheduler[0].end == 1000
    assert _plain(ours.optim_wrapper) == _plain(stock.optim_wrapper)


@pytest.mark.parametrize('name', ['maskrcnn_vmamba_t.py', 'maskrcnn_vmamba_b.py'])
def test_1x_recipe_is_mmdets(tmp_path, name):
    ours = load(name)
    stock = _stock(tmp_path, 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    for key in ('train_dataloader', 'val_dataloader', 'param_scheduler', 'train_cfg',
                'optim_wrapper', 'val_evaluator'):
        assert _plain(ours[key]) == _plain(stock[key]), key
    ours_model, stock_model = _plain(ours.model), _plain(stock.model)
    for part in ('rpn_head', 'roi_head', 'train_cfg', 'test_cfg', 'data_preprocessor'):
        assert ours_model[part] == stock_model[part], part


@pytest.mark.parametrize('name,base', [
    ('upernet_vmamba_t_ade20k.py', 'swin-tiny'), ('upernet_vmamba_s_ade20k.py', 'swin-small'),
    ('upernet_vmamba_b_ade20k.py', 'swin-base')])
def test_upernet_recipe_is_mmsegs(tmp_path, name, base):
    ours = load(name)
    stock = _stock(tmp_path, f'mmseg::swin/{base}-patch4-window7-in1k-pre_upernet_8xb2-160k_'
                   'ade20k-512x512.py')
    for key in ('train_dataloader', 'val_dataloader', 'param_scheduler', 'train_cfg',
                'optim_wrapper', 'tta_pipeline'):
        assert _plain(ours[key]) == _plain(stock[key]), key
    ours_model, stock_model = _plain(ours.model), _plain(stock.model)
    for part in ('decode_head', 'auxiliary_head', 'data_preprocessor', 'test_cfg'):
        assert ours_model[part] == stock_model[part], part


def test_toy_metainfo_matches_the_generator():
    det, seg = load(TOY[0]), load(TOY[1])
    assert det.metainfo.classes == TOY_DET_CLASSES
    assert [tuple(c) for c in det.metainfo.palette] == TOY_DET_PALETTE
    assert det.model.roi_head.bbox_head.num_classes == len(TOY_DET_CLASSES)
    assert det.model.roi_head.mask_head.num_classes == len(TOY_DET_CLASSES)
    assert seg.metainfo.classes == TOY_SEG_CLASSES
    assert [tuple(c) for c in seg.metainfo.palette] == TOY_SEG_PALETTE
    assert seg.model.decode_head.num_classes == len(TOY_SEG_CLASSES)
    assert seg.train_dataloader.dataset.reduce_zero_label
    for cfg in (det, seg):
        assert cfg.model.backbone.arch == SMALL_ARCH and cfg.model.backbone.init_cfg is None
        assert cfg.toy_data.root == cfg.data_root
        assert cfg.train_dataloader.num_workers == 0  # keeps --resume bit-exact


# ---------------------------------------------------------------- building and running models

def _build(name: str, small_backbone: bool):
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    backbone = cfg.model.backbone
    backbone.init_cfg = None
    if small_backbone:
        backbone.arch = SMALL_ARCH
        widths = [32, 64, 128, 256]
        if cfg.default_scope == 'mmdet':
            cfg.model.neck.in_channels = widths
        if 'decode_head' in cfg.model:
            cfg.model.decode_head.in_channels = widths
            cfg.model.auxiliary_head.in_channels = widths[2]
        if cfg.model.get('head', {}).get('in_channels'):
            cfg.model.head.in_channels = widths[-1]
    if 'data_preprocessor' in cfg.model and cfg.model.data_preprocessor.get('size'):
        cfg.model.data_preprocessor.size = (64, 96)
    if cfg.default_scope == 'mmdet':  # fewer RoIs: the heads' cost, not their structure
        cfg.model.train_cfg.rpn_proposal.max_per_img = 64
        cfg.model.train_cfg.rcnn.sampler.num = 32
        cfg.model.test_cfg.rpn.max_per_img = 32
        cfg.model.test_cfg.rcnn.max_per_img = 5
    torch.manual_seed(0)
    return cfg, revert_sync_batchnorm(MODELS.build(cfg.model))


def _det_batch(num_classes):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64), (3, 48, 64)], num_items=[2, 1],
                          num_classes=num_classes, with_mask=True)


def _seg_batch(num_classes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for h, w in ((64, 96), (64, 96)):  # mmseg's predict path needs equal sizes
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, h, w))
        label[:, :4] = 255
        samples.append(SegDataSample(gt_sem_seg=PixelData(data=label),
                                     metainfo=dict(img_shape=(h, w), ori_shape=(h, w))))
    return dict(inputs=inputs, data_samples=samples)


def _cls_batch(num_classes):
    from mmpretrain.structures import DataSample
    inputs = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def _loss_and_predict(cfg, model):
    scope = cfg.default_scope
    if scope == 'mmdet':
        batch = _det_batch(cfg.model.roi_head.bbox_head.num_classes)
    elif scope == 'mmseg':
        batch = _seg_batch(cfg.model.decode_head.num_classes)
    else:
        batch = _cls_batch(cfg.model.head.num_classes)
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith('backbone.')]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(**data, mode='predict')
    assert len(preds) == 2
    return preds


#: One config per family runs; the others differ only in backbone arch and widths (checked).
FAMILY = {'maskrcnn_vmamba_t.py': sorted(DET), 'upernet_vmamba_t_ade20k.py': sorted(SEG),
          'cls_vmamba_t_in1k.py': sorted(CLS)}
WIDTH_KEYS = (('neck', 'in_channels'), ('decode_head', 'in_channels'),
              ('auxiliary_head', 'in_channels'), ('head', 'in_channels'))


@pytest.mark.parametrize('name', sorted(FAMILY) + TOY)
def test_builds_and_runs_loss_and_predict(name):
    """The config's model (necks, heads, preprocessors, losses) with the fixtures' small
    backbone for time (the toy configs use it anyway); full-size backbones are checked below."""
    cfg, model = _build(name, small_backbone=name not in TOY)
    preds = _loss_and_predict(cfg, model)
    if cfg.default_scope == 'mmdet':
        assert preds[0].pred_instances.masks.shape[-2:] == preds[0].ori_shape
    elif cfg.default_scope == 'mmseg':
        assert preds[0].pred_sem_seg.data.shape[-2:] == (64, 96)
    else:
        assert preds[0].pred_score.shape == (cfg.model.head.num_classes, )


@pytest.mark.parametrize('vmamba,swin', sorted(TOY_T.items()))
def test_toy_t_pairs_differ_only_in_the_backbone(vmamba, swin):
    ours, theirs = load(vmamba), load(swin)
    assert ours.model.backbone.type == 'VMamba' and ours.model.backbone.arch == 'tiny'
    assert ours.model.backbone.init_cfg is None and theirs.model.backbone.init_cfg is None
    assert theirs.model.backbone.type == 'SwinTransformer'
    assert theirs.model.backbone.embed_dims == 96
    ours_model, theirs_model = _plain(ours.model), _plain(theirs.model)
    del ours_model['backbone'], theirs_model['backbone']
    assert ours_model == theirs_model
    for key in ('train_dataloader', 'val_dataloader', 'param_scheduler', 'train_cfg',
                'optim_wrapper', 'custom_hooks', 'toy_data'):
        assert _plain(ours[key]) == _plain(theirs[key]), key
    assert ours.train_cfg.max_iters == 2000
    assert [h.type for h in ours.custom_hooks] == ['RNGStateHook', 'FiniteLossHook']


@pytest.mark.parametrize('name', sorted(TOY_T) + sorted(TOY_T.values()))
def test_toy_t_configs_build_and_run_loss_and_predict(name):
    cfg, model = _build(name, small_backbone=False)
    _loss_and_predict(cfg, model)


@pytest.mark.parametrize('family,name', [(f, n) for f, names in FAMILY.items() for n in names
                                         if n != f])
def test_variants_differ_only_in_backbone_and_widths(family, name):
    def strip(cfg):
        model = _plain(cfg.model)
        del model['backbone']
        for part, key in WIDTH_KEYS:
            model.get(part, {}).pop(key, None)
        return model
    assert strip(load(name)) == strip(load(family))


# Backbone parameters with 4 out norms (spec, "The three released models").
BACKBONE_PARAMS = {'tiny': 29_481_408, 'small': 49_380_096, 'base': 87_534_592}


@pytest.mark.parametrize('name', ['maskrcnn_vmamba_t.py', 'upernet_vmamba_s_ade20k.py',
                                  'maskrcnn_vmamba_b.py'])
def test_full_size_backbone_from_config(name):
    arch = {**DET, **SEG}[name]
    cfg = load(name)
    init_default_scope(cfg.default_scope)
    backbone = cfg.model.backbone
    backbone.init_cfg = None
    model = MODELS.build(backbone)
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMS[arch]
