"""Data-pipeline throughput with and without visually coherent mixup.

The YOLOv3 training pipeline of ``configs/yolov3_random_shapes.py`` (load
a JPEG, annotations, Expand, MinIoURandomCrop, Resize to 608, RandomFlip,
PhotoMetricDistortion, Pad to square, pack) runs on 32 synthetic 640x480
JPEGs with 1-10 boxes each, in one process, samples drawn in the same order
on every side:

* no mixup (the baseline);
* ``VisuallyCoherentMixup`` in ``MultiImageMixDataset`` (as
  ``configs/yolov3_mixup.py``: mixes the raw images, then the pipeline);
* ``VisuallyCoherentMixupCached`` in the plain dataset pipeline;
* mmdet's ``MixUp`` (YOLOX style) in ``MultiImageMixDataset``, for
  reference.

Sides are interleaved in rounds, after an untimed warm-up round, so that
machine noise hits all alike; the median images/s per side (process CPU
time) is reported, and the median over rounds of its ratio to the
baseline in the same round (a round draws the same samples on every side,
but other samples than the other rounds). The augmentations after the mix
draw the same values on every side for the same sample: the mixing
transforms draw random numbers of their own, and the later Expand, crop
and flip would otherwise differ by side, which changes their cost by up
to 1.6x.

    .venv/bin/python benchmarks/bench_mixup.py
"""
import os.path as osp
import statistics
import tempfile
import time

COMMAND = '.venv/bin/python benchmarks/bench_mixup.py'
NUM_IMAGES = 32
IMG_HW = (480, 640)


def _write_images(root: str) -> list:
    """Synthetic JPEGs (noise plus rectangles) and their box annotations."""
    import cv2
    import numpy as np
    rng = np.random.RandomState(0)
    data_list = []
    for i in range(NUM_IMAGES):
        h, w = IMG_HW
        img = rng.randint(0, 256, (h, w, 3), np.uint8) // 4
        instances = []
        for _ in range(rng.randint(1, 11)):
            x1, y1 = rng.randint(0, w - 64), rng.randint(0, h - 64)
            x2 = x1 + rng.randint(32, min(256, w - x1))
            y2 = y1 + rng.randint(32, min(256, h - y1))
            img[y1:y2, x1:x2] = rng.randint(64, 256, 3)
            instances.append(dict(bbox=[x1, y1, x2, y2], bbox_label=0,
                                  ignore_flag=0))
        path = osp.join(root, f'{i}.jpg')
        cv2.imwrite(path, img)
        data_list.append(dict(img_path=path, img_id=i, height=h, width=w,
                              instances=instances))
    return data_list


class _Reseed:
    """Seed numpy from (round, image id) where the sides' pipelines meet,
    so that every side augments a sample alike."""

    round = 0

    def __call__(self, results):
        import numpy as np
        np.random.seed(self.round * NUM_IMAGES + results['img_id'])
        return results


def _pipelines():
    reseed = dict(type='_BenchReseed')
    load = [dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True)]
    crop = dict(type='MinIoURandomCrop',
                min_ious=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9), min_crop_size=0.3)
    rest = [
        dict(type='Resize', scale=(608, 608), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='Pad', pad_to_square=True, pad_val=dict(img=(0, 0, 0))),
    ]
    expand = dict(type='Expand', mean=[0, 0, 0], to_rgb=True,
                  ratio_range=(1, 2))
    plain = [reseed, expand, crop] + rest + [dict(type='PackDetInputs')]
    weighted = [reseed, expand, dict(type='AlignInstanceKeys',
                                     transforms=[crop])
                ] + rest + [dict(type='PackDetInputsWithWeights')]
    return dict(
        none=(load + plain, None),
        coherent=(load, [dict(type='VisuallyCoherentMixup')] + weighted),
        cached=(load + [dict(type='VisuallyCoherentMixupCached')] + weighted,
                None),
        mmdet_mixup=(load, [
            dict(type='MixUp', img_scale=(608, 608), ratio_range=(0.8, 1.6),
                 pad_val=114.0)
        ] + plain),
    )


def _build(data_list, pipeline, wrapper):
    from mmengine.dataset import BaseDataset

    from mmdet.datasets import MultiImageMixDataset

    class _InMemory(BaseDataset):
        METAINFO = dict(classes=('box', ))

        def load_data_list(self):
            return [dict(d) for d in data_list]

    inner = _InMemory(pipeline=pipeline, serialize_data=False)
    if wrapper is None:
        return inner
    return MultiImageMixDataset(dataset=inner, pipeline=wrapper)


def run(rounds: int = 5, samples: int = 24) -> list:
    import numpy as np
    from mmengine.registry import init_default_scope

    import cv2
    from _timing import alternated, one_thread

    import mmdet_freebies  # noqa: F401  (registers the pack's modules)
    from mmdet.registry import TRANSFORMS
    if '_BenchReseed' not in TRANSFORMS:
        TRANSFORMS.register_module(name='_BenchReseed', module=_Reseed)
    init_default_scope('mmdet')
    # decoding and resizing too: one thread, as the other benchmarks
    with one_thread(cv2), tempfile.TemporaryDirectory() as root:
        data_list = _write_images(root)
        datasets = {
            name: _build(data_list, *spec)
            for name, spec in _pipelines().items()
        }
        speeds = {name: [] for name in datasets}
        for r in range(-1, rounds):  # round -1: warm-up, not timed
            _Reseed.round = r + 1  # seeds >= 0
            for name, dataset in alternated(list(datasets.items()), r):
                np.random.seed(r + 1)
                order = np.random.randint(0, NUM_IMAGES, samples)
                start = time.process_time()
                for i in order:
                    dataset[int(i)]
                if r >= 0:
                    speeds[name].append(
                        samples / (time.process_time() - start))
    detail = {
        'none': 'YOLOv3 training pipeline, no mixup',
        'coherent': 'VisuallyCoherentMixup in MultiImageMixDataset '
        '(2 JPEG decodes per sample)',
        'cached': 'VisuallyCoherentMixupCached in the dataset pipeline',
        'mmdet_mixup': "mmdet's MixUp (YOLOX style) in MultiImageMixDataset "
        '(3 JPEG decodes per sample: its get_indexes loads the partner once '
        'more)',
    }
    rows = []
    for name, values in speeds.items():
        speed = statistics.median(values)
        ratio = statistics.median(
            v / b for v, b in zip(values, speeds['none']))
        rows.append(
            dict(
                name=f'mixup pipeline: {name}',
                value=f'{speed:.1f} img/s ({ratio:.2f}x)',
                detail=f'{detail[name]}; {NUM_IMAGES} synthetic '
                f'{IMG_HW[1]}x{IMG_HW[0]} JPEGs, median of {rounds} rounds '
                f'of {samples} samples (the same augmentation draws after '
                'the mix on every side) after a warm-up round, CPU time, '
                'one process, 1 thread; ratio to no mixup: the median over '
                'rounds of the ratio within a round',
                command=COMMAND))
    return rows


if __name__ == '__main__':
    for row in run():
        print(f"{row['name']}: {row['value']}  ({row['detail']})")
