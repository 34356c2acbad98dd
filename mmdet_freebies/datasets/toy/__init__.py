from .generator import SHAPES, make_toy_dataset

__all__ = ['SHAPES', 'make_toy_dataset']
