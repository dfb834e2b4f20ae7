# Mask R-CNN on the synthetic toy instance set (mmvmamba.datasets.toy, 3 classes, 64 train /
# 16 val images of 160x128): the README's main job, on CPU in a few minutes, no download.
#   python tools/train.py configs/toy/maskrcnn_vmamba_toy.py
# The data are written to data/toy/coco/ on first use. The recipe is maskrcnn_vmamba_t.py scaled
# down: the fixtures' small VMamba (dims 32, depths 1-1-2-1, ssm_ratio 2) trained from scratch,
# narrow FPN/heads, fewer RoIs, a short schedule at a higher learning rate.
_base_ = ['../maskrcnn_vmamba_t.py']

data_root = 'data/toy/coco/'
# Created on first use by tools/train.py and tools/test.py (mmvmamba.datasets.toy).
toy_data = dict(root=data_root, kind='coco')
# mmvmamba.datasets.TOY_DET_CLASSES / TOY_DET_PALETTE (a test checks they agree).
metainfo = dict(
    classes=('square', 'disk', 'triangle'),
    palette=[(220, 40, 40), (40, 200, 60), (50, 80, 230)])
num_classes = 3
image_scale = (160, 128)  # (W, H): the toy images' own size

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1,
                  ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0),
        drop_path_rate=0.1,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=64, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(num_convs=2, in_channels=64, conv_out_channels=64,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Data are read in the main process: cheap here, and it keeps --resume bit-exact.
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))

default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=4, max_keep_ckpts=2))
log_processor = dict(window_size=5)
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=4)
