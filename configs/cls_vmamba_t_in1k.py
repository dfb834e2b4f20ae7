# ImageNet-1k evaluation of the VMamba-T classifier (mmpretrain ImageClassifier:
# VMamba(out_indices=(3,)) -> global average pool -> linear head; the last out norm is the
# reference's classifier norm), 224x224 centre crop of the short side resized to 256 (bicubic),
# as the reference evaluated.
#
# Evaluate a released checkpoint after converting it to mmpretrain's layout:
#   python tools/model_converters/vmamba2mmvmamba.py vssm1_tiny_0230s_ckpt_epoch_264.pth \
#       checkpoints/vmamba_t_in1k_mmpretrain.pth --to mmpretrain --unsafe-allow-pickle
#   python tools/test.py configs/cls_vmamba_t_in1k.py checkpoints/vmamba_t_in1k_mmpretrain.pth
# with ImageNet's val split under data/imagenet (mmpretrain's layout; override data_root with
# --cfg-options test_dataloader.dataset.data_root=...).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvmamba'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='VMamba', arch='tiny', out_indices=(3, ), drop_path_rate=0.2,
                  init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
