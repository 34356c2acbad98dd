# Bag of Freebies Table 1, "1.0:1.0 beta distribution w/ weighted loss"
# (VOC07 83.48 mAP vs 83.54 for Beta(1.5, 1.5)): lambda ~ Beta(1, 1), i.e.
# uniform on [0, 1], with the weighted loss.
_base_ = './yolov3_mixup.py'

# only the mix ratio changes: the rest of the pipeline is the row before's
train_pipeline = _base_.train_pipeline
train_pipeline[0] = dict(type='VisuallyCoherentMixup', alpha=1.0, beta=1.0)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
