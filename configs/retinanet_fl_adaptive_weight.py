# RetinaNet FL with the adaptive loss weight of the face-detection
# training-failure study: classification first, then a rising box weight.
_base_ = './retinanet_fl.py'

custom_hooks = [
    dict(
        type='LossWeightScheduleHook',
        # Epoch units keep the ramp's share of the schedule under --toy.
        by_epoch=True,
        schedules=[
            # Box loss at 0.1 of the baseline's 1.0 at the start, cosine up
            # to 1.0 over the first 3 of 12 epochs, baseline after that.
            dict(loss='bbox_head.loss_bbox', policy='cosine', begin=0, end=3,
                 from_weight=0.1, to_weight=1.0),
        ]),
]
