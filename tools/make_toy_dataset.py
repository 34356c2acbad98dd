"""Generate the embedded synthetic COCO-format dataset.

Example:
    python tools/make_toy_dataset.py --out data/toy --seed 0
"""
import argparse

from mmdet_freebies.datasets.toy.generator import make_toy_dataset


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'--img-size must look like 128x128, got {text!r}')
    return w, h


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/toy')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=512)
    parser.add_argument('--num-val', type=int, default=128)
    parser.add_argument('--num-classes', type=int, default=4)
    parser.add_argument('--img-size', type=parse_size, default=(128, 128),
                        help='WxH, e.g. 128x128')
    parser.add_argument('--min-visible', type=float, default=0.5,
                        help='share of its pixels every object keeps '
                        'visible under the later shapes')
    parser.add_argument('--min-size', type=float, default=8.0,
                        help='smallest object size (geometric mean of the '
                        'sides) in pixels')
    args = parser.parse_args(argv)
    try:
        paths = make_toy_dataset(args.out, seed=args.seed,
                                 num_train=args.num_train,
                                 num_val=args.num_val,
                                 num_classes=args.num_classes,
                                 img_size=args.img_size,
                                 min_size=args.min_size,
                                 min_visible=args.min_visible)
    except ValueError as e:
        # the generator names its arguments: name the flags instead
        message = str(e)
        for name in ('seed', 'num_train', 'num_val', 'num_classes',
                     'img_size', 'min_size', 'min_visible'):
            message = message.replace(f'{name}=',
                                      f"--{name.replace('_', '-')} ")
        parser.error(message)
    for split, path in paths.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()
