# Bag of Freebies Table 1, "0.5:0.5 evenly" (VOC07 83.05 mAP vs 83.54 for
# Beta(1.5, 1.5) with weighted loss): a fixed 0.5 blend and no loss weights
# (the weighted head then computes mmdet's plain loss).
_base_ = './yolov3_mixup.py'

# only the mix ratio changes: the rest of the pipeline is the row before's
train_pipeline = _base_.train_pipeline
train_pipeline[0] = dict(
    type='VisuallyCoherentMixup', ratio=0.5, with_weights=False)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
