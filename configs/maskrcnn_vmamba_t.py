# Mask R-CNN + FPN, 1x schedule (12 epochs), COCO, VMamba-T backbone: the paper's recipe.
# Everything but the backbone (and the FPN widths for base) comes from mmdet's Swin-T 1x config,
# exactly as the reference repository (MzeroMiko/VMamba, detection/configs/vssm1) ran it:
# AdamW lr 1e-4, weight decay 0.05, 1000-iteration linear warm-up, steps at epochs 8 and 11,
# 2 images per GPU x 8 GPUs.
#
# Optimizer parameter groups are mmdet's: no weight decay on parameters whose name contains
# 'norm'. SS2D's A_logs and Ds are *not* excluded: the reference's runs decayed them too, and
# those runs produced the paper's numbers.
#
# The backbone starts from the reference's ImageNet-1k checkpoint (its key layouts are converted
# on load). The released files embed a pickled yacs config, which safe loading refuses: convert
# a trusted copy once to tensors only, then point init_cfg at it (default path below), e.g.
#   python tools/model_converters/vmamba2mmvmamba.py vssm1_tiny_0230s_ckpt_epoch_264.pth \
#       checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth --unsafe-allow-pickle
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/converted.pth
# A missing file stops the run when the weights are initialised (no silent random init).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py']
custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)

pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))

# Saves Python/NumPy/torch random states in checkpoints so --resume continues exactly.
custom_hooks = [dict(type='RNGStateHook')]
