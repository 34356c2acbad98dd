# Sampling-Free Faster R-CNN, RPN only: the RPN is trained on all valid
# anchors with no 256-anchor sampler; the RoI head keeps biased sampling.
_base_ = './faster_rcnn_biased.py'

model = dict(
    rpn_head=dict(
        # Official normalisation (rpn/loss.py): objectness BCE summed over
        # valid anchors / num_pos (what mmdet's AnchorHead does with
        # PseudoSampler), box loss 0.5 x mean over the 4 coordinates of
        # positives = sum / (8 num_pos); mmdet divides by num_pos, hence 1/8.
        loss_bbox=dict(type='L1Loss', loss_weight=0.125)),
    train_cfg=dict(
        rpn=dict(
            # No sampling: every anchor that is not ignored (IoU in
            # [0.3, 0.7)) is a sample; avg_factor = number of positives.
            sampler=dict(_delete_=True, type='PseudoSampler'),
            # Anchors crossing the image border are not trained, as in the
            # official code (maskrcnn-benchmark STRADDLE_THRESH = 0).
            allowed_border=0)))

# RPN objectness bias from the data prior; GLS on the RPN only.
custom_hooks = [
    dict(type='OptimalBiasInit'),
    dict(type='GuidedLossScaling', groups=['rpn']),
]
