
from .mixup_switch_hook import MixupSwitchHook  # noqa: F401
from .optimal_bias_init import OptimalBiasInit  # noqa: F401
from .guided_loss_scaling import GuidedLossScaling  # noqa: F401
from .training_health_hook import TrainingHealthHook  # noqa: F401
from .loss_weight_schedule_hook import LossWeightScheduleHook  # noqa: F401
