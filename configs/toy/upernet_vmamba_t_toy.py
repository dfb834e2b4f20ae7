# The toy UperNet with the full-size VMamba-T backbone (dims 96, depths 2-2-8-2, ssm_ratio 1,
# random init) on a larger toy set (800 train / 160 val images), 2000 iterations: the GPU
# validation run of docs/results.md, side by side with upernet_swin_t_toy.py (same everything
# but the backbone).
#   python tools/train.py configs/toy/upernet_vmamba_t_toy.py --amp
#   (bf16: add --cfg-options optim_wrapper.dtype=bfloat16)
_base_ = ['./upernet_vmamba_toy.py']

data_root = 'data/toy/ade_large/'
toy_data = dict(root=data_root, kind='ade', num_train=800, num_val=160)

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

max_iters = 2000
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=500)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters),
]
# A lower rate than the small toy model's 1e-3: these are 30M-parameter backbones from scratch.
optim_wrapper = dict(optimizer=dict(lr=3e-4))

# FiniteLossHook stops the run at the first non-finite loss term.
custom_hooks = [dict(type='RNGStateHook'), dict(type='FiniteLossHook')]
default_hooks = dict(
    logger=dict(interval=20, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=250, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=20)
