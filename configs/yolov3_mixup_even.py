# Bag of Freebies Table 1, "0.5:0.5 evenly" (VOC07 83.05 mAP vs 83.54 for
# Beta(1.5, 1.5) with weighted loss): a fixed 0.5 blend and no loss weights
# (the weighted head then computes mmdet's plain loss).
_base_ = './yolov3_mixup.py'

train_pipeline = [
    dict(type='VisuallyCoherentMixup', ratio=0.5, with_weights=False),
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
