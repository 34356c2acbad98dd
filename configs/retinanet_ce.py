# Sampling-Free ablation, row 1 (Table IV(a) "CE"): RetinaNet trained with
# plain sigmoid cross-entropy over all anchors instead of focal loss, with
# the focal-loss bias init (prior 0.01) kept. Expected to DIVERGE: ~100k
# easy negatives per image, each contributing -log(0.99), summed and divided
# by the few positives, give a classification loss and gradient orders of
# magnitude above the box loss; the paper reports no AP for this row.
_base_ = './retinanet_fl.py'

model = dict(
    bbox_head=dict(
        # Plain CE instead of focal loss; ignored anchors (IoU in [0.4, 0.5))
        # get label weight 0 from AnchorHead, the sum is divided by num_pos.
        loss_cls=dict(
            _delete_=True,
            type='CrossEntropyLoss',
            use_sigmoid=True,
            loss_weight=1.0)),
    # CE-trained scores are calibrated to the foreground prior (~1e-5 per
    # class on COCO), so 0.05 would drop nearly every detection. The official
    # 2020 code thresholds at prior x C (1e-5 x 80 = 8e-4) with NMS 0.55 for
    # RetinaNet, its 2021 configs at 1e-3 with NMS 0.5; NMS 0.55 is kept
    # because the toy tables in docs/sampling_free.md were run with it.
    test_cfg=dict(score_thr=1e-3, nms=dict(iou_threshold=0.55)))
# --tta merges the flipped results with its own NMS: the same 0.55
tta_model = dict(tta_cfg=dict(nms=dict(iou_threshold=0.55)))
