# Bag of Freebies, Faster R-CNN row 3 (VOC07 79.59 -> 80.23 mAP): class label
# smoothing of the RoI head's softmax, q' = (1 - eps) q + eps / K with
# K = num_classes + 1 (background is one of the smoothed classes).
_base_ = './faster_rcnn_cosine.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='LabelSmoothCrossEntropyLoss',
                # the paper gives no eps for detection; 0.1 is the usual
                # value (Inception-v3, Bag of Tricks for classification)
                label_smoothing=0.1,
                use_sigmoid=False,
                loss_weight=1.0))))
