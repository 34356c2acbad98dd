# Bag of Freebies, Faster R-CNN row 2 (VOC07 77.77 -> 79.59 mAP): cosine
# learning rate with linear warm-up instead of the step schedule.
_base_ = './faster_rcnn_biased.py'

max_epochs = 12  # the baseline's 1x schedule length
param_scheduler = [
    # the baseline's warm-up, kept: x0.001 -> x1 over 500 iterations
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    # cosine decay to 0 over the whole run, updated every iteration
    # (replaces the x0.1 steps at epochs 8 and 11)
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs,
        eta_min=0.0,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True)
]
