# FCOS R-50-FPN (caffe, GN head) 1x with focal loss: baseline (36.6 AP in
# mmdet's model zoo, 37.1 in the official FCOS and Sampling-Free papers).
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
