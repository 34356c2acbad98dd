"""Write a config rewritten by ``--toy`` to a file, for launchers that cannot
take ``--toy`` (``mim train mmdet``, a fork's own ``tools/train.py``).

Example:
    python tools/toy_config.py configs/retinanet_fl.py --size tiny \
        --out /tmp/retinanet_toy.py
"""
import argparse
import os.path as osp

from mmengine.config import Config

from mmdet_freebies.utils.toy import TOY_DATA_ROOT, TOY_SIZES, apply_toy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--out', required=True)
    parser.add_argument('--size', default='small', choices=sorted(TOY_SIZES))
    parser.add_argument('--toy-data', default=TOY_DATA_ROOT)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if osp.splitext(args.out)[1] not in ('.py', '.json', '.yaml', '.yml'):
        parser.error(f'--out {args.out!r} must end in .py, .json or .yaml '
                     '(the format mmengine dumps the config in)')
    cfg = Config.fromfile(args.config)
    try:
        apply_toy(cfg, args.size, osp.abspath(args.toy_data))
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    cfg.dump(args.out)
    print(args.out)


if __name__ == '__main__':
    main()
