"""Write a grid of training samples after a config's whole training pipeline,
with every box drawn at an opacity equal to its mixup weight and labelled
``class weight``, to check that visually coherent mixup keeps the geometry
of both images and weights their objects.

Examples:
    python tools/browse_mixup.py configs/yolov3_mixup.py --toy --num 8 \
        --out work_dirs/mixup_grid.png
    python tools/browse_mixup.py configs/faster_rcnn_mixup.py --num 16 \
        --out grid.png --seed 1
"""
import argparse
import math
import os
import os.path as osp
import sys
import warnings

import numpy as np

from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_data, load_config)

_PALETTE = [(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255),
            (255, 0, 255), (255, 255, 0), (0, 128, 255), (128, 0, 255)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--num', type=int, default=8,
                        help='number of samples in the grid')
    parser.add_argument('--out', default='mixup_grid.png',
                        help='output PNG path')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the sample choice and the pipeline')
    parser.add_argument('--cell', type=int, default=320,
                        help='longest side of one grid cell in pixels')
    add_common_args(parser)
    return parser.parse_args(argv)


def to_bgr_uint8(inputs) -> np.ndarray:
    """(C, H, W) tensor in the pipeline's BGR order -> (H, W, 3) uint8."""
    img = inputs.permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_sample(packed: dict, classes, cell: int) -> np.ndarray:
    """Draw one packed sample; box opacity and label show the weight."""
    import cv2
    img = to_bgr_uint8(packed['inputs'])
    in_h, in_w = img.shape[:2]
    scale = cell / max(in_h, in_w)
    img = cv2.resize(img, (max(1, round(img.shape[1] * scale)),
                           max(1, round(img.shape[0] * scale))),
                     interpolation=cv2.INTER_NEAREST)
    gt = packed['data_samples'].gt_instances
    boxes = gt.bboxes.tensor.numpy() * scale if len(gt) else np.zeros((0, 4))
    weights = (gt.weights.numpy() if 'weights' in gt else np.ones(len(gt)))
    for box, label, weight in zip(boxes, gt.labels.tolist(), weights):
        colour = _PALETTE[label % len(_PALETTE)]
        overlay = img.copy()
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(overlay, (x1, y1), (x2, y2), colour, 2)
        name = classes[label] if label < len(classes) else str(label)
        cv2.putText(overlay, f'{name} {weight:.2f}', (x1 + 2, max(y1, 10) +
                                                     10),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        alpha = float(np.clip(weight, 0, 1))
        img = cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0)
    h, w = img.shape[:2]
    header = 'weights' if 'weights' in gt else 'no weights'
    canvas = np.full((cell + 16, cell, 3), 255, np.uint8)
    canvas[16:16 + h, :w] = img
    cv2.putText(canvas, f'{in_w}x{in_h}px, {len(gt)} obj, {header}', (2, 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def make_grid(cells) -> np.ndarray:
    cols = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    h, w = cells[0].shape[:2]
    grid = np.full((rows * (h + 4), cols * (w + 4), 3), 128, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        grid[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = cell
    return grid


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.num < 1:
            raise UserInputError(f'--num must be >= 1, got {args.num}')
        if args.cell < 16:
            raise UserInputError(f'--cell must be >= 16 pixels, got '
                                 f'{args.cell}')
        if not args.out.lower().endswith(('.png', '.jpg', '.jpeg')):
            raise UserInputError(f'--out {args.out!r} must be a .png or '
                                 '.jpg file')
        cfg = load_config(args)
        check_data(cfg, ['train_dataloader'])
    except UserInputError as e:
        sys.exit(f'error: {e}')
    import cv2
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed

    from mmdet.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    set_random_seed(args.seed)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    classes = dataset.metainfo.get('classes', ())
    if args.num > len(dataset):
        warnings.warn(f'--num {args.num}: the training set has only '
                      f'{len(dataset)} samples; drawing all of them')
    indices = np.random.permutation(len(dataset))[:args.num]
    cells = [draw_sample(dataset[int(i)], classes, args.cell)
             for i in indices]
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, make_grid(cells)):
        sys.exit(f'error: could not write {args.out!r}')
    print(f'wrote {len(cells)} samples to {args.out}')


if __name__ == '__main__':
    main()
