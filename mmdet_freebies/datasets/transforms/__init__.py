
from .align_instance_keys import AlignInstanceKeys  # noqa: F401
from .formatting import PackDetInputsWithWeights  # noqa: F401
from .visually_coherent_mixup import (  # noqa: F401
    VisuallyCoherentMixup, VisuallyCoherentMixupCached)
