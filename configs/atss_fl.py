# ATSS R-50-FPN 1x with focal loss: baseline.
_base_ = 'mmdet::atss/atss_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
