"""Helpers shared by the pack's hooks."""
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn


def unwrap_detector(model: nn.Module) -> nn.Module:
    """The detector inside ``model``: through a model wrapper (DDP) and a
    test-time-augmentation model (``tools/test.py --tta``'s
    ``DetTTAModel``)."""
    if is_model_wrapper(model):
        model = model.module
    return model.module if isinstance(model, BaseTTAModel) else model
