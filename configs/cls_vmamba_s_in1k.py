# ImageNet-1k evaluation of the VMamba-S classifier; see cls_vmamba_t_in1k.py.
_base_ = ['./cls_vmamba_t_in1k.py']
model = dict(backbone=dict(arch='small', drop_path_rate=0.3))
