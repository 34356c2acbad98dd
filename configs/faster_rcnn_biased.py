# Faster R-CNN R-50-FPN 1x with biased sampling (RPN 256 anchors at 1:1,
# RoI 512 at 1:3): the Sampling-Free and Bag-of-Freebies baseline.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
