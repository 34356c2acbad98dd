"""Sampling-Free costs on toy inputs, side by side in one process.

1. Train-step overhead of GuidedLossScaling: the same RetinaNet-CE model,
   the same batch and weights, with the hook attached and detached in
   alternation (the median of each interleaved pair's ratio, with its
   quartiles: the steps of a pair run back to back, so the machine's drift
   cancels, and one lucky step on either side does not set the result;
   paper target: below 1 %). The cost of the loss-dict
   rescaling alone is timed too (its forward arithmetic; the train-step
   ratio includes its backward).
2. ``faster_rcnn_sf`` (with GuidedLossScaling, as in training) against
   ``faster_rcnn_biased``: train-step time (interleaved, ratio of the
   fastest steps) and peak memory (the CUDA allocator's peak over what is
   allocated before the steps on a GPU; on a CPU the exact peak bytes of
   the tensors a step creates; each config in a fresh subprocess). Paper:
   +7 % time, -3 % memory (R-50-FPN on COCO, GPU).

Times are the thread's CPU time on one thread, which load from other
processes on a shared machine does not count.

Usage: ``.venv/bin/python benchmarks/bench_sampling_free.py``
"""
import copy
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from _paths import CONFIGS
from _timing import alternated, one_thread

COMMAND = '.venv/bin/python benchmarks/bench_sampling_free.py'
IMG = 128
BATCH = 2


def _setup(config: str, data_root: str):
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmdet_freebies  # noqa: F401
    from mmdet_freebies.utils.toy import apply_toy
    register_all_modules()
    cfg = apply_toy(Config.fromfile(osp.join(CONFIGS, config)),
                    'small', data_root)
    cfg.train_dataloader.update(batch_size=BATCH, num_workers=0,
                                persistent_workers=False)
    # the current logger from here on: init_weights reports every parameter
    if not MMLogger.check_instance_created('bench_sampling_free'):
        MMLogger.get_instance('bench_sampling_free', log_level='ERROR')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    # lr 0: every step sees the same weights, so the two sides stay
    # comparable over the whole run.
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    return cfg, model, optim, batch


def _step(model, optim, batch) -> float:
    start = time.thread_time()
    model.train_step(copy.deepcopy(batch), optim)
    return time.thread_time() - start


def _toy_root(tmp: str) -> str:
    from mmdet_freebies.datasets.toy import make_toy_dataset
    make_toy_dataset(tmp, seed=0, num_train=BATCH * 2, num_val=2,
                     img_size=(IMG, IMG), min_size=8)
    return tmp + '/'


def bench_gls(data_root: str, iters: int = 40) -> list:
    from mmdet_freebies.engine.hooks import GuidedLossScaling
    _, model, optim, batch = _setup('retinanet_ce_sf.py', data_root)
    hook = GuidedLossScaling()
    for _ in range(3):  # warm-up, and resolve the groups once
        hook.attach(model)
        _step(model, optim, batch)
        hook.detach()
        _step(model, optim, batch)
    plain, guided = [], []
    for i in range(iters):
        for on in ((False, True) if i % 2 else (True, False)):
            if on:
                hook.attach(model)
                guided.append(_step(model, optim, batch))
                hook.detach()
            else:
                plain.append(_step(model, optim, batch))
    # each pair's ratio, as bench_health.py
    q1, ratio, q3 = statistics.quantiles(
        [g / p for g, p in zip(guided, plain)], n=4)
    # The rescaling itself, on the model's own loss dict.
    with torch.no_grad():
        losses = model(**model.data_preprocessor(batch, True), mode='loss')
    runs = []
    for _ in range(7):  # the fastest of 7 runs of 200 calls
        start = time.thread_time()
        for _ in range(200):
            hook.scaler(losses)
        runs.append((time.thread_time() - start) / 200)
    op = min(runs)
    step = min(plain)
    return [
        dict(name='GLS train-step overhead (RetinaNet-CE)',
             value=f'{(ratio - 1) * 100:+.1f} % (quartiles '
             f'{(q1 - 1) * 100:+.1f} % to {(q3 - 1) * 100:+.1f} %)',
             detail=f'median over {iters} interleaved pairs of train steps '
             "of each pair's ratio, hook attached vs detached, same "
             f'model/weights/batch; toy {IMG}px, batch {BATCH}, '
             f'ResNet-18/16 ({step * 1e3:.0f} ms/step, '
             f'{torch.get_num_threads()} thread); fastest steps '
             f'x{min(guided) / min(plain):.3f}',
             command=COMMAND),
        dict(name='GLS loss-dict rescaling cost',
             value=f'{op * 1e6:.0f} us/step ({op / step * 100:.2f} % of '
             'a step)',
             detail='GuidedLossScaler on the RetinaNet loss dict (5 levels '
             'x 2 keys), its forward arithmetic without autograd (the '
             'train-step row above includes the backward), fastest of 7 '
             'runs of 200 calls, vs the fastest plain step',
             command=COMMAND),
    ]


def _peak_memory_child(config: str, data_root: str) -> None:
    """Print the peak memory of 3 train steps as JSON (in a subprocess),
    over what the process holds after one warm-up step (its one-time
    allocations would count on both sides and pull the ratio to 1): on a
    GPU the CUDA allocator's peak; on a CPU the peak bytes of the tensors
    the steps create (exact, :class:`PeakMemory`; the process's RSS
    follows how the C allocator keeps freed memory, not the steps)."""
    _, model, optim, batch = _setup(config, data_root)
    if config == 'faster_rcnn_sf.py':
        from mmdet_freebies.engine.hooks import GuidedLossScaling
        GuidedLossScaling().attach(model)  # as in training
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
    model.train_step(copy.deepcopy(batch), optim)  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(3):
            model.train_step(copy.deepcopy(batch), optim)
        print(json.dumps(dict(
            peak=torch.cuda.max_memory_allocated() - base, cuda=True)))
        return
    from _memory import PeakMemory
    # what exists before a step: updated in place, not allocated by it
    state = [t for group in optim.optimizer.state.values()
             for t in group.values() if isinstance(t, torch.Tensor)]
    tensors = [*model.parameters(), *model.buffers(), *state]
    peaks = []
    for _ in range(3):
        data = copy.deepcopy(batch)
        with PeakMemory(tensors) as mode:
            model.train_step(data, optim)
        peaks.append(mode.peak)
    print(json.dumps(dict(peak=max(peaks), cuda=False)))


def bench_faster_rcnn(data_root: str, iters: int = 10) -> list:
    _, biased, opt_b, batch = _setup('faster_rcnn_biased.py', data_root)
    cfg, sf, opt_s, _ = _setup('faster_rcnn_sf.py', data_root)
    from mmdet_freebies.engine.hooks import GuidedLossScaling
    GuidedLossScaling().attach(sf)  # as in training
    for _ in range(2):
        _step(biased, opt_b, batch)
        _step(sf, opt_s, batch)
    times = {'b': [], 's': []}
    for i in range(iters):
        order = (('b', biased, opt_b), ('s', sf, opt_s))
        for key, model, opt in alternated(order, i):
            times[key].append(_step(model, opt, batch))
    t_ratio = min(times['s']) / min(times['b'])
    t_median = statistics.median(times['s']) / statistics.median(times['b'])
    peaks = {}
    for config in ('faster_rcnn_biased.py', 'faster_rcnn_sf.py'):
        proc = subprocess.run(
            [sys.executable, __file__, '--peak-memory', config, data_root],
            capture_output=True, text=True)
        if proc.returncode:  # show why, not only that it failed
            raise RuntimeError(f'peak-memory run of {config} failed:\n'
                               f'{proc.stderr[-3000:]}')
        peaks[config] = json.loads(proc.stdout.strip().splitlines()[-1])
    m_b = peaks['faster_rcnn_biased.py']['peak']
    m_s = peaks['faster_rcnn_sf.py']['peak']
    if peaks['faster_rcnn_sf.py']['cuda']:
        where = ('CUDA max_memory_allocated over the memory allocated '
                 'before 3 train steps (after a warm-up step)')
    else:
        where = ('CPU: peak bytes of the tensors a train step creates '
                 '(exact, counted by a TorchDispatchMode; highest of 3 '
                 'steps after a warm-up step); one subprocess per config, '
                 'GLS attached to sf')
    return [
        dict(name='faster_rcnn_sf vs faster_rcnn_biased: train-step time',
             value=f'{(t_ratio - 1) * 100:+.1f} % (x{t_ratio:.3f}); '
             'paper +7 %',
             detail=f'fastest of {iters} interleaved train steps each, same '
             f'batch; toy {IMG}px, batch {BATCH}, ResNet-18/16 (the RoI '
             'head, 2x more RoIs without the sampler, weighs far more than '
             f'on R-50 at 800px): biased {min(times["b"]) * 1e3:.0f} -> sf '
             f'{min(times["s"]) * 1e3:.0f} ms; median ratio '
             f'x{t_median:.3f}',
             command=COMMAND),
        dict(name='faster_rcnn_sf vs faster_rcnn_biased: peak memory',
             value=f'{(m_s / m_b - 1) * 100:+.1f} % '
             f'({m_b / 2**20:.0f} -> {m_s / 2**20:.0f} MiB); paper -3 %',
             detail=where + f'; toy {IMG}px, batch {BATCH}',
             command=COMMAND),
    ]


def run() -> list:
    with one_thread(), tempfile.TemporaryDirectory() as tmp:
        root = _toy_root(tmp)
        return bench_gls(root) + bench_faster_rcnn(root)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--peak-memory':
        torch.set_num_threads(1)
        _peak_memory_child(sys.argv[2], sys.argv[3])
    else:
        for row in run():
            print(f"{row['name']}: {row['value']}  [{row['detail']}]")
