# Bag of Freebies, YOLOv3 row 6, the full BoF (VOC07 82.14 -> 83.68 mAP;
# COCO at 416, this config's test size, 31.0 -> 36.0 AP for the whole
# stack; 33.0 -> 37.0 at 608): visually coherent mixup with
# lambda ~ Beta(1.5, 1.5), each object's loss weighted by its blend ratio,
# mixup off for the last 20 epochs (GluonCV: last 20 of 280 on COCO).
_base_ = './yolov3_label_smooth.py'

# Mixing happens first, on the raw images (GluonCV's MixupDetection wraps
# the raw dataset), so the inner dataset only loads.
train_pipeline = [
    dict(type='VisuallyCoherentMixup', alpha=1.5, beta=1.5),
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 2)),
    # the crop drops objects: keep gt_weights aligned with the boxes
    dict(
        type='AlignInstanceKeys',
        transforms=[
            dict(
                type='MinIoURandomCrop',
                min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                min_crop_size=0.3)
        ]),
    dict(type='Resize', scale=(608, 608), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # padded last, so that the distortion leaves the padding black
    dict(type='Pad', pad_to_square=True, pad_val=dict(img=(0, 0, 0))),
    # PackDetInputs would drop the weights
    dict(type='PackDetInputsWithWeights')
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='MultiImageMixDataset',  # supplies the second image
        dataset=dict(
            type={{_base_.dataset_type}},
            data_root={{_base_.data_root}},
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=[
                dict(
                    type='LoadImageFromFile',
                    backend_args={{_base_.backend_args}}),
                dict(type='LoadAnnotations', with_bbox=True)
            ],
            backend_args={{_base_.backend_args}}),
        pipeline=train_pipeline))
# the head multiplies its positive terms by gt_instances.weights
model = dict(bbox_head=dict(type='WeightedYOLOV3Head'))
custom_hooks = [dict(type='MixupSwitchHook', num_last_epochs=20)]
