# RetinaNet R-50-FPN 1x with focal loss: the Sampling-Free baseline (36.4 AP).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
