"""mmdet_freebies: free training improvements for MMDetection 3.x.

Importing the package (``custom_imports=dict(imports=['mmdet_freebies'])``)
checks the installed stack, allowlists mmengine's checkpoint globals for
torch's weights-only loader, and registers every module into mmdet's
registries (MODELS, TASK_UTILS, TRANSFORMS, HOOKS, METRICS).
"""
from .utils import check_versions, register_torch_safe_globals
from .version import __version__

check_versions()
register_torch_safe_globals()

from . import datasets, engine, evaluation, models  # noqa: E402,F401

__all__ = ['__version__']
