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
import subprocess
import sys
import time
import traceback

import torch

HERE = osp.dirname(osp.abspath(__file__))


def load(path):
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_version():
    """The commit the figures come from, ``+dirty`` with local changes."""
    def git(*args):
        return subprocess.run(['git', '-C', HERE, *args], capture_output=True,
                              text=True).stdout.strip()
    commit = git('rev-parse', '--short', 'HEAD') or 'unknown'
    return commit + ('+dirty' if git('status', '--porcelain') else '')


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='Markdown file to write; defaults '
                        'to docs/benchmarks.md, or to none with --only (a '
                        'partial table would replace the whole one)')
    parser.add_argument('--only', nargs='*',
                        help='benchmarks to run: bench_<name>, <name> or '
                        'bench_<name>.py')
    args = parser.parse_args()
    paths = {osp.splitext(osp.basename(p))[0]: p
             for p in sorted(glob.glob(osp.join(HERE, 'bench_*.py')))}
    only = {osp.splitext(osp.basename(n))[0] for n in args.only or []}
    only = {n if n.startswith('bench_') else f'bench_{n}' for n in only}
    if only - set(paths):
        parser.error(f'unknown benchmarks {sorted(only - set(paths))}; '
                     f'choose from {sorted(paths)}')
    if args.out is None and not only:
        args.out = osp.join(osp.dirname(HERE), 'docs', 'benchmarks.md')
    # checked now, not after minutes of benchmarks
    if args.out and not osp.isdir(osp.dirname(osp.abspath(args.out))):
        parser.error('--out directory '
                     f'{osp.dirname(osp.abspath(args.out))!r} does not exist')
    threads = torch.get_num_threads()  # each benchmark sets its own
    version = code_version()  # before the runs: edits meanwhile do not count
    rows, failed = [], []
    for name, path in paths.items():
        if only and name not in only:
            continue
        print(f'[bench] {name}', flush=True)
        start = time.perf_counter()
        try:  # one failure must not stop the others (their rows print)
            for row in load(path).run():
                print(f"  {row['name']}: {row['value']}", flush=True)
                rows.append(row)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f'  ({time.perf_counter() - start:.0f} s)', flush=True)
    lines = [
        '# Benchmarks', '',
        'Written by `make bench` (`benchmarks/run_all.py`); each row compares '
        'its two sides in one run (against the mmdet reference where there '
        'is one); the third column says what was compared and how.', '',
        f'Machine: {cpu_model()}, '
        f'{threads} torch threads by default (rows on 1 thread say so), '
        f'torch {torch.__version__}, '
        f'Python {platform.python_version()}, '
        f'{time.strftime("%Y-%m-%d")}, code {version}.', '',
        '| Benchmark | Result | What was compared | Command |',
        '|---|---|---|---|',
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['value']} | {r['detail']} | "
                     f"`{r['command']}` |")
    if failed:  # a partial table would replace the whole one
        sys.exit(f'[bench] failed: {", ".join(failed)}; '
                 f'{args.out or "no table"} left as it was')
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
