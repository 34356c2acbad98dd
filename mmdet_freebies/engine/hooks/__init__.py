
from .mixup_switch_hook import MixupSwitchHook  # noqa: F401
