"""`custom_imports=dict(imports=['mmdet_freebies'])` registers every module of
the pack into mmdet's registries, without replacing any of mmdet's."""
import json
import subprocess
import sys

from mmdet.registry import MODELS, TASK_UTILS, TRANSFORMS

# registry attribute of mmdet.registry -> the pack's modules in it
EXPECTED = {
    'MODELS': ['FusedBalancedL1Loss', 'LabelSmoothCrossEntropyLoss',
               'WeightedRetinaHead', 'WeightedRPNHead', 'WeightedYOLOV3Head',
               'WeightedStandardRoIHead', 'WeightedShared2FCBBoxHead',
               'SamplingFreeShared2FCBBoxHead', 'SamplingFreePAAHead'],
    'TASK_UTILS': ['IoUBalancedSampler', 'KeepAllSampler'],
    'TRANSFORMS': ['VisuallyCoherentMixup', 'VisuallyCoherentMixupCached',
                   'PackDetInputsWithWeights', 'AlignInstanceKeys'],
    'HOOKS': ['OptimalBiasInit', 'GuidedLossScaling', 'MixupSwitchHook',
              'TrainingHealthHook', 'LossWeightScheduleHook'],
    'METRICS': ['DetectionErrorMetric'],
}

_CHECK = """
import json, sys
from mmengine.config import Config
from mmdet import registry
Config.fromfile(sys.argv[1])  # imports custom_imports, as tools/train.py
names = json.loads(sys.argv[2])
print(json.dumps({reg: {n: getattr(getattr(registry, reg).get(n),
                                   '__module__', None) for n in ns}
                  for reg, ns in names.items()}))
"""


def test_custom_imports_registers_everything(tmp_path):
    """In a fresh process (this one imported the pack already), a config's
    custom_imports alone registers every module of the pack."""
    config = tmp_path / 'cfg.py'
    config.write_text("custom_imports = dict(imports=['mmdet_freebies'], "
                      'allow_failed_imports=False)\n')
    out = subprocess.run(
        [sys.executable, '-c', _CHECK, str(config), json.dumps(EXPECTED)],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    for reg, found in modules.items():
        for name, module in found.items():
            assert module and module.startswith('mmdet_freebies.'), (
                reg, name, module)
    assert sum(map(len, modules.values())) == sum(map(len, EXPECTED.values()))


def test_mmdet_modules_are_not_replaced():
    import mmdet_freebies  # noqa: F401
    assert MODELS.get('BalancedL1Loss').__module__.startswith('mmdet.')
    assert TRANSFORMS.get('MixUp').__module__.startswith('mmdet.')
    assert TASK_UTILS.get('IoUBalancedNegSampler').__module__.startswith(
        'mmdet.')
