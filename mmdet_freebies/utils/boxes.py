"""Box sizes as COCO's annotations give them."""
import numpy as np


def box_sides(bboxes: np.ndarray) -> np.ndarray:
    """Width and height of boxes (x1, y1, x2, y2), shape (n, 2), rounded to
    1/100 px: mmdet keeps a COCO box [x, y, w, h] as float32 corners, so a
    32 px side comes back as 31.999998 (COCO's boxes carry two decimals)."""
    bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.round(bboxes[:, 2:] - bboxes[:, :2], 2)
