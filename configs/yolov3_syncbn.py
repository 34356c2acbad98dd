# Bag of Freebies, YOLOv3 row 2 (VOC07 80.25 -> 80.81 mAP): synchronized
# BatchNorm, so the statistics are computed over the whole multi-GPU batch
# (8 GPUs x 8 images) instead of 8 images per GPU.
_base_ = './yolov3_baseline.py'

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    # every BN layer becomes SyncBN; mmdet's Darknet keeps its BN in eval
    # mode (norm_eval=True), where there are no batch statistics to sync,
    # while GluonCV's --syncbn trains every BN layer
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False),
    neck=dict(norm_cfg=norm_cfg),
    bbox_head=dict(norm_cfg=norm_cfg))
