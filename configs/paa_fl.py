# PAA R-50-FPN 1x with focal loss: baseline (40.4 AP in mmdet).
_base_ = 'mmdet::paa/paa_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
