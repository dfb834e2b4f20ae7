# Mask R-CNN + FPN, 1x schedule, COCO, VMamba-S: maskrcnn_vmamba_t.py with the small backbone
# (drop path 0.3). See maskrcnn_vmamba_t.py for the recipe and how to set the checkpoint.
_base_ = ['./maskrcnn_vmamba_t.py']

pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
