from .generator import GENERATOR_VERSION, SHAPES, make_toy_dataset

__all__ = ['GENERATOR_VERSION', 'SHAPES', 'make_toy_dataset']
