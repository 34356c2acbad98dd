# Libra RetinaNet R-50-FPN 1x (Pang et al., CVPR 2019): balanced feature
# pyramid and Balanced L1 loss, as mmdet's
# libra_rcnn/libra-retinanet_r50_fpn_1x_coco.py (37.6 box AP on COCO).
_base_ = './retinanet_fl.py'
model = dict(
    # RetinaNet's FPN followed by BFP refining level 1 (Sec. 3.2); BFP adds
    # weights, as in mmdet's config
    neck=[
        dict(
            type='FPN',
            in_channels=[256, 512, 1024, 2048],
            out_channels=256,
            start_level=1,
            add_extra_convs='on_input',
            num_outs=5),
        dict(
            type='BFP',
            in_channels=256,
            num_levels=5,
            refine_level=1,
            refine_type='non_local')
    ],
    bbox_head=dict(
        # Balanced L1 (Sec. 3.3) with beta=0.11 as mmdet's config, our fused
        # drop-in for mmdet's BalancedL1Loss (mmdet's formula, whose gradient
        # is Eq. (7)'s only at beta=1: paper_form=True, docs/libra.md)
        loss_bbox=dict(
            _delete_=True,
            type='FusedBalancedL1Loss',
            alpha=0.5,
            gamma=1.5,
            beta=0.11,
            loss_weight=1.0)))
