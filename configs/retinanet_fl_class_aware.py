# RetinaNet FL with class-aware (class-balanced) image sampling: the
# "balanced" row of the EIC study, where balanced sampling matched or beat
# random sampling (AR@500 81.27 vs 78.56).
_base_ = './retinanet_fl.py'

train_dataloader = dict(
    # Pick a class uniformly, then an image containing it (mmdet's
    # ClassAwareSampler); replaces DefaultSampler(shuffle=True).
    sampler=dict(_delete_=True, type='ClassAwareSampler', num_sample_class=1))
