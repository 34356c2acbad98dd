"""Run every ``benchmarks/bench_*.py`` and write a Markdown table.

Each module defines ``run() -> list[dict]`` with keys ``name``, ``value``,
``detail`` and ``command``. Usage (``make bench``):

    .venv/bin/python benchmarks/run_all.py --out docs/benchmarks.md
"""
import argparse
import importlib.util
import glob
import os.path as osp
import platform
import time

import torch

HERE = osp.dirname(osp.abspath(__file__))


def load(path):
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/benchmarks.md')
    parser.add_argument('--only', nargs='*', help='bench_<name> files to run')
    args = parser.parse_args()
    rows = []
    for path in sorted(glob.glob(osp.join(HERE, 'bench_*.py'))):
        name = osp.splitext(osp.basename(path))[0]
        if args.only and name not in args.only:
            continue
        print(f'[bench] {name}', flush=True)
        start = time.perf_counter()
        for row in load(path).run():
            print(f"  {row['name']}: {row['value']}", flush=True)
            rows.append(row)
        print(f'  ({time.perf_counter() - start:.0f} s)', flush=True)
    lines = [
        '# Benchmarks', '',
        'Written by `make bench` (`benchmarks/run_all.py`); every figure is '
        'measured side by side with the mmdet reference in one process.', '',
        f'Machine: {platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} torch threads, torch {torch.__version__}, '
        f'Python {platform.python_version()}, '
        f'{time.strftime("%Y-%m-%d")}.', '',
        '| Benchmark | Result | What was compared | Command |',
        '|---|---|---|---|',
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['value']} | {r['detail']} | "
                     f"`{r['command']}` |")
    with open(args.out, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
