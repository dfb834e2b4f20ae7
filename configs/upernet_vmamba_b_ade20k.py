# UperNet, ADE20K 512x512, 160k iterations, VMamba-B (drop path 0.6). Same recipe as
# upernet_vmamba_t_ade20k.py, on mmseg's Swin-B UperNet config (heads on widths
# 128/256/512/1024, auxiliary head on 512).
_base_ = ['mmseg::swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)

pretrained = 'checkpoints/vssm_base_0229_ckpt_epoch_237.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='base',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
custom_hooks = [dict(type='RNGStateHook')]
