# Bag of Freebies, YOLOv3 row 4 (VOC07 81.23 -> 81.69 mAP): cosine learning
# rate (GluonCV --lr-mode cosine) after the baseline's warm-up, plus
# GluonCV's --no-wd (no weight decay on biases and BN beta/gamma). --no-wd is
# in GluonCV's YOLOv3 COCO recipe (with step decay there), not in the
# paper's table; this row carries it, so its gain includes it.
_base_ = './yolov3_random_shapes.py'

param_scheduler = [
    # the baseline's warm-up, kept: x0.1 -> x1 over 2000 iterations
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
         end=2000),
    # cosine decay to 0 over the whole run, updated every iteration (replaces
    # the step decay at epochs 218 and 246); no end or T_max, so that
    # mmengine takes train_cfg.max_epochs and follows a changed length
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        begin=0,
        by_epoch=True,
        convert_to_iter_based=True)
]
# --no-wd: decaying BN scales/shifts and biases only fights the normalisation
optim_wrapper = dict(
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
