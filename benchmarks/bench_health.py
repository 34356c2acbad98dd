"""Overhead of ``TrainingHealthHook`` on a RetinaNet train step.

The same model, batch and optimizer run train steps with and without the
hook (its forward hook, gradient hooks (``Tensor.register_hook``) and
per-iteration checks installed, with the runner's optim wrapper),
interleaved in rounds so that machine noise hits both sides alike. The
hook's torch hooks are installed for its own steps only, but its windows
persist, and ``window`` untimed hooked steps fill them first: the timed
steps run every windowed check, as in a long run. Reported: the median step
time of each side and the overhead.

    .venv/bin/python benchmarks/bench_health.py
"""
import os.path as osp
import statistics
import tempfile
import time
from types import SimpleNamespace

from _paths import CONFIGS

COMMAND = '.venv/bin/python benchmarks/bench_health.py'


def _setup(data_root: str):
    import torch
    from mmengine.config import Config
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmdet_freebies.utils.toy import apply_toy
    register_all_modules()
    cfg = apply_toy(Config.fromfile(osp.join(CONFIGS, 'retinanet_fl.py')),
                    'small', data_root)
    cfg.train_dataloader.batch_size = 2  # 128 px as 'small', cheaper steps
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    # the current logger from here on: init_weights reports every parameter
    logger = MMLogger.get_instance('bench_health', log_level='ERROR')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    loader = Runner.build_dataloader(cfg.train_dataloader)
    batch = next(iter(loader))
    runner = SimpleNamespace(
        model=model, iter=0, work_dir=data_root, param_schedulers=[],
        optim_wrapper=optim_wrapper,
        message_hub=MessageHub.get_instance('bench_health'), logger=logger)
    return model, optim_wrapper, batch, runner, len(batch['inputs'])


def _timed_hook_class():
    """TrainingHealthHook that adds the thread CPU time spent in its own
    code (iteration hooks and the torch forward/grad hooks) to ``spent``,
    the clock of the step times it is divided by."""
    from mmdet_freebies.engine.hooks import TrainingHealthHook

    class TimedHealthHook(TrainingHealthHook):
        spent = 0.0

        def _timed(self, fn):
            def wrapper(*args, **kwargs):
                start = time.thread_time()
                fn(*args, **kwargs)
                self.spent += time.thread_time() - start
            return wrapper

        def _grad_hook(self, name):
            return self._timed(super()._grad_hook(name))

        def _score_hook(self, *spec):
            return self._timed(super()._score_hook(*spec))

        def before_train_iter(self, *args, **kwargs):
            self._timed(super().before_train_iter)(*args, **kwargs)

        def after_train_iter(self, *args, **kwargs):
            self._timed(super().after_train_iter)(*args, **kwargs)

    return TimedHealthHook


def run(pairs: int = 80) -> list:
    from _timing import alternated, one_thread
    from mmdet_freebies.datasets.toy import make_toy_dataset
    # One thread and the thread's CPU time: on a shared machine wall time
    # and multi-threaded process time mostly measure the neighbours.
    with one_thread(), tempfile.TemporaryDirectory() as root:
        make_toy_dataset(root, seed=0, num_train=16, num_val=4)
        model, optim_wrapper, batch, runner, batch_size = _setup(
            root + '/')
        hook = _timed_hook_class()(warmup_iters=0)

        def step(with_hook: bool) -> float:
            start = time.thread_time()
            if with_hook:
                hook.before_train_iter(runner, runner.iter)
            outputs = model.train_step(batch, optim_wrapper)
            if with_hook:
                hook.after_train_iter(runner, runner.iter,
                                      outputs=outputs)
            runner.iter += 1
            return time.thread_time() - start

        for _ in range(2):  # warm-up of allocator and kernels
            step(False)
        hook.before_train(runner)
        for _ in range(hook.window):  # full windows: every check runs
            step(True)
        hook.after_train(runner)
        hook.spent = 0.0
        base, health = [], []
        for i in range(pairs):
            # Alternate which side goes first; the hook's torch hooks
            # are installed only for its own steps, its windows persist.
            for with_hook in alternated((True, False), i):
                if with_hook:
                    hook.install(runner)
                    health.append(step(True))
                    hook.after_train(runner)
                else:
                    base.append(step(False))
    t0 = statistics.median(base)
    # each pair's ratio: the steps of a pair run back to back, so drift of
    # the machine's speed cancels within it
    ratios = sorted(h / b for h, b in zip(health, base))
    q1, ratio, q3 = statistics.quantiles(ratios, n=4)
    in_hook = hook.spent / pairs
    detail = (f'RetinaNet (toy small: ResNet-18/16, 128 px, batch '
              f'{batch_size}, CPU, 1 thread) train_step; score stats every '
              '5 iterations and window 50 (defaults), windows full; '
              'target < 3%')
    return [
        dict(name='TrainingHealthHook: time in its own code per step',
             value=f'{100 * in_hook / t0:.2f}% ({in_hook * 1e3:.2f} of '
                   f'{t0 * 1e3:.0f} ms)',
             detail=detail + '; time inside the hook (iteration hooks, '
             'forward hook, grad hooks) over the median step without it',
             command=COMMAND),
        dict(name='TrainingHealthHook: step with vs without, side by side',
             value=f'{100 * (ratio - 1):+.1f}% (quartiles '
                   f'{100 * (q1 - 1):+.1f}% to {100 * (q3 - 1):+.1f}%)',
             detail=detail + f'; median over {pairs} interleaved pairs of '
             'steps of each pair\'s thread CPU time ratio (with / without '
             f'the hook; median step without it {t0 * 1e3:.1f} ms); the '
             'machine\'s step-to-step noise is of the order of the quartiles',
             command=COMMAND),
    ]


if __name__ == '__main__':
    for row in run():
        print(f"{row['name']}: {row['value']}\n  {row['detail']}")
