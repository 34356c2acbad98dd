# Sampling-Free RetinaNet (the flagship, Table IV(a) last row): CE with no
# sampling + optimal bias init + guided loss scaling. Paper: 36.4 (FL) ->
# 37.0 AP on COCO minival, R-50-FPN 1x.
_base_ = './retinanet_ce_obi.py'

# OBI from the row before, plus GLS (custom_hooks lists are not merged).
custom_hooks = [
    dict(type='OptimalBiasInit'),
    dict(type='GuidedLossScaling'),
]
