# Libra Faster R-CNN R-50-FPN 1x (Pang et al., CVPR 2019): balanced feature
# pyramid, IoU-balanced sampling and Balanced L1 loss, as mmdet's
# libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py (38.3 box AP on COCO).
# Inherits the IoU-balanced sampling row and adds BFP and Balanced L1.
# One difference from mmdet 3.x's sampler: floor_thr=-1 keeps IoU-0
# negatives in the bottom bin, as -1 is documented and as the authors'
# release of the paper's code (38.6 AP) sampled them; mmdet's turns it into
# 0 on its first call (floor_thr=0 reproduces that; see docs/libra.md).
_base_ = './faster_rcnn_iou_balanced.py'
model = dict(
    # FPN followed by BFP: integrate, refine (non-local) and strengthen the
    # pyramid levels (Sec. 3.2); BFP adds weights, as in mmdet's config
    neck=[
        dict(
            type='FPN',
            in_channels=[256, 512, 1024, 2048],
            out_channels=256,
            num_outs=5),
        dict(
            type='BFP',
            in_channels=256,
            num_levels=5,
            refine_level=2,
            refine_type='non_local')
    ],
    roi_head=dict(
        bbox_head=dict(
            # Balanced L1 (Sec. 3.3, Eq. (8)), our fused drop-in for mmdet's
            # BalancedL1Loss: same values and gradients, faster and lighter
            loss_bbox=dict(
                _delete_=True,
                type='FusedBalancedL1Loss',
                alpha=0.5,
                gamma=1.5,
                beta=1.0,
                loss_weight=1.0))),
    train_cfg=dict(
        # at most 5 negatives per positive in the RPN, as mmdet's config
        rpn=dict(sampler=dict(neg_pos_ub=5), allowed_border=-1)))
