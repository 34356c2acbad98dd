# Bag of Freebies, Faster R-CNN row 2 (VOC07 77.77 -> 79.59 mAP): cosine
# learning rate with linear warm-up instead of the step schedule.
_base_ = './faster_rcnn_biased.py'

param_scheduler = [
    # the baseline's warm-up, kept: x0.001 -> x1 over 500 iterations
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    # cosine decay to 0 over the whole run, updated every iteration (replaces
    # the x0.1 steps at epochs 8 and 11); no end or T_max, so that mmengine
    # takes train_cfg.max_epochs and follows a changed length
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        begin=0,
        by_epoch=True,
        convert_to_iter_based=True)
]
