import numpy as np

from mmdet_freebies.utils.boxes import box_sides


def test_sides_undo_the_float32_corners_of_coco_boxes():
    # COCO [x, y, w, h] = [12.3, 40.7, 32, 31.5] as float32 corners
    box = np.array([[12.3, 40.7, 44.3, 72.2]], np.float32)
    assert (box[:, 2:].astype(float) - box[:, :2] != [32, 31.5]).any()
    assert box_sides(box).tolist() == [[32.0, 31.5]]
    assert box_sides(np.zeros((0, 4))).shape == (0, 2)
    assert box_sides([1, 2, 3.456, 7]).tolist() == [[2.46, 5.0]]
