"""`custom_imports=dict(imports=['mmdet_freebies'])` registers every module of
the pack into mmdet's registries, without replacing any of mmdet's."""
import subprocess
import sys

import pytest

from mmdet.registry import HOOKS, METRICS, MODELS, TASK_UTILS, TRANSFORMS

EXPECTED = {
    MODELS: ['FusedBalancedL1Loss', 'LabelSmoothCrossEntropyLoss',
             'WeightedRetinaHead', 'WeightedRPNHead', 'WeightedYOLOV3Head',
             'WeightedStandardRoIHead', 'WeightedShared2FCBBoxHead',
             'SamplingFreeShared2FCBBoxHead'],
    TASK_UTILS: ['IoUBalancedSampler', 'KeepAllSampler'],
    TRANSFORMS: ['VisuallyCoherentMixup', 'VisuallyCoherentMixupCached',
                 'PackDetInputsWithWeights', 'AlignInstanceKeys'],
    HOOKS: ['OptimalBiasInit', 'GuidedLossScaling', 'MixupSwitchHook',
            'TrainingHealthHook', 'LossWeightScheduleHook'],
    METRICS: ['DetectionErrorMetric'],
}


@pytest.mark.parametrize('registry', list(EXPECTED),
                         ids=lambda r: r.name)
def test_custom_imports_registers_everything(registry):
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    cfg = Config(dict(custom_imports=dict(imports=['mmdet_freebies'],
                                          allow_failed_imports=False)))
    import_modules_from_strings(**cfg.custom_imports)
    for name in EXPECTED[registry]:
        module = registry.get(name)
        assert module is not None, f'{name} not in {registry.name}'
        assert module.__module__.startswith('mmdet_freebies.')


def test_mmdet_modules_are_not_replaced():
    import mmdet_freebies  # noqa: F401
    assert MODELS.get('BalancedL1Loss').__module__.startswith('mmdet.')
    assert TRANSFORMS.get('MixUp').__module__.startswith('mmdet.')
    assert TASK_UTILS.get('IoUBalancedNegSampler').__module__.startswith(
        'mmdet.')


def test_import_registers_in_a_fresh_process():
    code = ('from mmdet.registry import HOOKS; import mmdet_freebies; '
            'print(HOOKS.get("OptimalBiasInit").__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.stdout.strip() == 'OptimalBiasInit', out.stderr
