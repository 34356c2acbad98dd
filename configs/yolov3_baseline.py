# YOLOv3 Darknet-53 at 416 (multi-scale 320-416), 273 epochs: the
# Bag-of-Freebies baseline.
_base_ = 'mmdet::yolo/yolov3_d53_8xb8-ms-416-273e_coco.py'
custom_imports = dict(imports=['mmdet_freebies'], allow_failed_imports=False)
