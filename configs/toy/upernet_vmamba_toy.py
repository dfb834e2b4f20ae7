# UperNet on the synthetic toy segmentation set (mmvmamba.datasets.toy, ADE20K layout with
# reduce_zero_label, 5 classes, 64 train / 16 val images of 160x128), on CPU in a few minutes:
#   python tools/train.py configs/toy/upernet_vmamba_toy.py
# The data are written to data/toy/ade/ on first use. The recipe is upernet_vmamba_t_ade20k.py
# scaled down: the fixtures' small VMamba trained from scratch, narrow heads, 128x128 crops,
# an epoch-based short schedule (epochs keep --resume bit-exact).
_base_ = ['../upernet_vmamba_t_ade20k.py']

data_root = 'data/toy/ade/'
toy_data = dict(root=data_root, kind='ade')
# mmvmamba.datasets.TOY_SEG_CLASSES / TOY_SEG_PALETTE (a test checks they agree).
metainfo = dict(
    classes=('sky', 'grass', 'road', 'disk', 'box'),
    palette=[(90, 150, 230), (60, 170, 60), (110, 110, 110), (230, 200, 40), (200, 60, 160)])
num_classes = 5
crop_size = (128, 128)
image_scale = (160, 128)  # (W, H): the toy images' own size

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1,
                  ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False, mlp_ratio=4.0),
        drop_path_rate=0.1,
        init_cfg=None),
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=num_classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
# Data are read in the main process: cheap here, and it keeps --resume bit-exact.
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=max_epochs, by_epoch=True,
         convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=dict(max_norm=10.0))

default_hooks = dict(
    logger=dict(interval=5, log_metric_by_epoch=True),
    checkpoint=dict(by_epoch=True, interval=4, max_keep_ckpts=2))
log_processor = dict(by_epoch=True, window_size=5)
randomness = dict(seed=0)
