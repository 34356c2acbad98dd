# Bag of Freebies Table 1, "1.0:1.0 beta distribution w/ weighted loss"
# (VOC07 83.48 mAP vs 83.54 for Beta(1.5, 1.5)): lambda ~ Beta(1, 1), i.e.
# uniform on [0, 1], with the weighted loss.
_base_ = './yolov3_mixup.py'

train_pipeline = [
    dict(type='VisuallyCoherentMixup', alpha=1.0, beta=1.0),
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 2)),
    dict(
        type='AlignInstanceKeys',
        transforms=[
            dict(
                type='MinIoURandomCrop',
                min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                min_crop_size=0.3)
        ]),
    dict(type='Resize', scale=(608, 608), keep_ratio=True),
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(0, 0, 0))),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputsWithWeights')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
