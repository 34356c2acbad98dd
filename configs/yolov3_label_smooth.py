# Bag of Freebies, YOLOv3 row 5 (VOC07 81.69 -> 82.14 mAP): class label
# smoothing, GluonCV style: the sigmoid class targets become 1 - e for the
# object's class and e for every other class, e = min(1 / C, 1 / 40) = 1/80
# on COCO. LabelSmoothCrossEntropyLoss smooths each binary target with
# (1 - eps) t + eps / 2, so eps = 2 e = 1/40 (see docs/bag_of_freebies.md
# for the difference with mmdet's YOLOV3Head.one_hot_smoother). eps depends
# on C: with 40 classes or fewer e = 1/40 and eps = 1/20 (VOC); --toy keeps
# COCO's 1/40.
_base_ = './yolov3_cosine.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='LabelSmoothCrossEntropyLoss',
            label_smoothing=1 / 40,  # 2 * min(1 / 80, 1 / 40)
            use_sigmoid=True,
            loss_weight=1.0,
            reduction='sum')))
