# Sampling-Free ablation, row 2: CE + optimal bias initialization. The
# classification bias starts at -log((1 - pi) / pi) with pi the foreground
# prior counted from the training set, which removes the initial flood of
# negative gradient that makes retinanet_ce.py diverge.
_base_ = './retinanet_ce.py'

# Estimate pi with the head's own anchors and assigner before training
# (skipped on resume / load_from).
custom_hooks = [dict(type='OptimalBiasInit')]
