# maskrcnn_vmamba_t_toy.py with mmdet's Swin-T backbone (random init) in place of VMamba-T: the
# comparison run of docs/results.md. Swin-T as in mmdet's swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py.
#   python tools/train.py configs/toy/maskrcnn_swin_t_toy.py --amp
_base_ = ['./maskrcnn_vmamba_t_toy.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=True,
        init_cfg=None))
