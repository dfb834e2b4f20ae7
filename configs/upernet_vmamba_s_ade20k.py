# UperNet, ADE20K 512x512, 160k iterations, VMamba-S (drop path 0.3). Same recipe as
# upernet_vmamba_t_ade20k.py, on mmseg's Swin-S UperNet config (what the reference inherited).
_base_ = ['mmseg::swin/swin-small-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)

pretrained = 'checkpoints/vssm_small_0229_ckpt_epoch_222.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='VMamba',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
custom_hooks = [dict(type='RNGStateHook')]
