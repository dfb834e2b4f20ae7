# Mask R-CNN + FPN, 1x schedule, COCO, VMamba-B: maskrcnn_vmamba_t.py with the base backbone
# (drop path 0.6) and the FPN on its widths 128/256/512/1024.
_base_ = ['./maskrcnn_vmamba_t.py']

pretrained = 'checkpoints/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
