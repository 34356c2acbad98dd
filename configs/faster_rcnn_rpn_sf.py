# Sampling-Free Faster R-CNN, RPN only: the RPN is trained on all valid
# anchors with no 256-anchor sampler; the RoI head keeps biased sampling.
_base_ = './faster_rcnn_biased.py'

model = dict(
    rpn_head=dict(
        # Official box loss (rpn/loss.py): smooth L1 with beta 1/9, 0.5 x
        # mean over the 4 coordinates of positives = sum / (8 num_pos);
        # mmdet divides by num_pos, hence 1/8. Smooth L1, not mmdet's L1:
        # GLS sets the objectness loss from this value, and L1 is larger at
        # every residual (2 / (9 |x|) times below 1/9).
        loss_bbox=dict(type='SmoothL1Loss', beta=1 / 9, loss_weight=0.125)),
    train_cfg=dict(
        rpn=dict(
            # No sampling: every anchor that is not ignored (IoU in
            # [0.3, 0.7)) is a sample; avg_factor = number of positives.
            # (G2's objectness BCE is the mean over valid anchors / num_pos,
            # mmdet's the sum / num_pos: GLS's per-iteration ratio cancels
            # the factor.)
            sampler=dict(_delete_=True, type='PseudoSampler'),
            # Anchors crossing the image border are not trained, as in the
            # official code (maskrcnn-benchmark STRADDLE_THRESH = 0).
            allowed_border=0)))

# RPN objectness bias from the data prior; GLS on the RPN only.
custom_hooks = [
    dict(type='OptimalBiasInit'),
    dict(type='GuidedLossScaling', groups=['rpn']),
]
