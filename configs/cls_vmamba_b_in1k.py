# ImageNet-1k evaluation of the VMamba-B classifier; see cls_vmamba_t_in1k.py.
_base_ = ['./cls_vmamba_t_in1k.py']
model = dict(backbone=dict(arch='base', drop_path_rate=0.6), head=dict(in_channels=1024))
