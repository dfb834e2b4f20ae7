# Mask R-CNN + FPN, 3x multi-scale schedule, COCO, VMamba-S: maskrcnn_vmamba_t_ms3x.py with the
# small backbone (drop path 0.3).
_base_ = ['./maskrcnn_vmamba_t_ms3x.py']

pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
