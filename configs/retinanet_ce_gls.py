# Sampling-Free ablation, row 3: CE + guided loss scaling, with the focal
# loss bias init (0.01) kept. Every iteration the classification loss is
# rescaled to the box loss in value: L = L_reg + (L_reg / L_cls).detach() *
# L_cls. Nothing changes in the model or at test time.
_base_ = './retinanet_ce.py'

custom_hooks = [dict(type='GuidedLossScaling')]
