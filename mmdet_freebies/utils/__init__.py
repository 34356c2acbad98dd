from .torch_compat import register_torch_safe_globals
from .version_check import check_versions

__all__ = ['check_versions', 'register_torch_safe_globals']
