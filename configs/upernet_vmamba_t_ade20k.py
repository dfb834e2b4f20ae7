# UperNet, ADE20K 512x512, 160k iterations, VMamba-T backbone: the paper's recipe.
# Everything but the backbone comes from mmseg's Swin-T UperNet config, exactly as the reference
# repository (MzeroMiko/VMamba, segmentation/configs/vssm1) ran it: AdamW lr 6e-5, weight decay
# 0.01, 1500-iteration linear warm-up then poly decay, 2 images per GPU x 8 GPUs, auxiliary FCN
# head on stage 2.
#
# Optimizer parameter groups are mmseg's: no weight decay on parameters whose name contains
# 'norm'. SS2D's A_logs and Ds are *not* excluded: the reference's runs decayed them too, and
# those runs produced the paper's numbers.
#
# The backbone starts from the reference's ImageNet-1k checkpoint, converted once to tensors
# only (see maskrcnn_vmamba_t.py: tools/model_converters/vmamba2mmvmamba.py); set its path with
#   --cfg-options model.backbone.init_cfg.checkpoint=/path/to/converted.pth
# A missing file stops the run when the weights are initialised (no silent random init).
# Multi-scale + flip testing: tools/test.py CONFIG CKPT --tta.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)

pretrained = 'checkpoints/vssm1_tiny_0230s_ckpt_epoch_264.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

# Saves Python/NumPy/torch random states in checkpoints so --resume continues exactly (up to
# the data pipeline re-run over skipped batches of iteration-based loops; see RNGStateHook).
custom_hooks = [dict(type='RNGStateHook')]
