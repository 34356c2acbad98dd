# Bag of Freebies, YOLOv3 row 3 (VOC07 80.81 -> 81.23 mAP): random training
# shapes. Instead of a per-image scale in 320-416, every batch is resized
# to one random square shape from 320 to 608 in steps of 32, re-drawn every
# 10 iterations (GluonCV's RandomTransformDataLoader, mmdet's
# BatchSyncRandomResize). Testing stays at 416.
_base_ = './yolov3_syncbn.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 2)),
    dict(
        type='MinIoURandomCrop',
        min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        min_crop_size=0.3),
    # one fixed square canvas per image (was RandomResize 320-416), so that
    # every batch has the same square shape for the batch-level resize
    dict(type='Resize', scale=(608, 608), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # padded last, so that the distortion leaves the padding black
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(0, 0, 0))),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(
    data_preprocessor=dict(batch_augments=[
        # the batch's shape: 320..608 step 32, new draw every 10 iterations
        dict(
            type='BatchSyncRandomResize',
            random_size_range=(320, 608),
            interval=10,
            size_divisor=32)
    ]))
