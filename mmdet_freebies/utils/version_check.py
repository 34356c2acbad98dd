"""Fail early, and legibly, on an MMDetection stack this pack was not built
for (the registries and head internals it extends are version-specific)."""
from importlib import import_module

from packaging.version import Version

from ..version import SUPPORTED


def check_versions() -> None:
    """Raise ``ImportError`` naming every unsupported package and the range
    that is supported."""
    problems = []
    for name, (low, high) in SUPPORTED.items():
        try:
            found = import_module(name).__version__
        except ImportError:
            problems.append(f'{name} is not installed (need >={low},<{high})')
            continue
        if not Version(low) <= Version(found) < Version(high):
            problems.append(f'{name}=={found} (need >={low},<{high})')
    if problems:
        raise ImportError(
            'mmdet_freebies supports mmdet>=3.3.0,<3.4.0, '
            'mmcv>=2.0.0rc4,<2.2.0 and mmengine>=0.10.0,<1.0.0; found: ' +
            '; '.join(problems))
