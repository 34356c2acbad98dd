# Bag of Freebies, Faster R-CNN row 4, the full BoF (VOC07 80.23 -> 81.32
# mAP; COCO R-50 36.5 -> 37.6 AP for the whole stack): visually coherent
# mixup, lambda ~ Beta(1.5, 1.5), with the RPN and RoI positives weighted by
# their object's blend ratio; mixup off for the last epoch (GluonCV turns it
# off for the last 20 of 280 YOLOv3 epochs, ~7% of the run).
_base_ = './faster_rcnn_label_smooth.py'

# Mixing happens first, on the raw images (GluonCV's MixupDetection wraps
# the raw dataset), so the inner dataset only loads.
train_pipeline = [
    dict(type='VisuallyCoherentMixup', alpha=1.5, beta=1.5),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
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
# heads that multiply their positive terms by gt_instances.weights
model = dict(
    rpn_head=dict(type='WeightedRPNHead'),
    roi_head=dict(
        type='WeightedStandardRoIHead',
        bbox_head=dict(type='WeightedShared2FCBBoxHead')))
custom_hooks = [dict(type='MixupSwitchHook', num_last_epochs=1)]
